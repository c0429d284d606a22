/* ir.h - what the ir/ module offers: the graph IR (nodes, constants, builder with shape
 * inference), its text form, its verifier, and the kernel IR both backends render.
 * Bottom layer: includes only the public header and the C library.
 */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>
#include "kiln.h"

/* ------------------------------------------------------------------------------------
 * Diagnostics: every internal function that can fail takes a kiln_diag and returns a
 * kiln_status. The first error wins; later ones are ignored (sticky).
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_diag {
  kiln_status status;
  char msg[2048];
} kiln_diag;

kiln_status kiln_diag_set(kiln_diag *d, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends to an error already set (for "list every unsupported op" style messages). */
void kiln_diag_append(kiln_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress of long operations (which compile stage is running, how many kernels), for a
 * log: the pass manager and the backends report, the driver decides what reaches stderr.
 * fn NULL: nobody listens. */
typedef struct kiln_progress {
  void (*fn)(void *user, const char *msg);
  void *user;
} kiln_progress;
void kiln_progress_report(const kiln_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Internal invariant check: stays on in release builds; aborts with file:line. Only for
 * bugs in Kiln, never for anything a user can cause (those get a status). */
#define KILN_ASSERT(c)                                                                 \
  do {                                                                                 \
    if (!(c)) kiln_ir_assert_fail(#c, __FILE__, __LINE__);                             \
  } while (0)
_Noreturn void kiln_ir_assert_fail(const char *cond, const char *file, int line);

/* ------------------------------------------------------------------------------------
 * Allocation: everything goes through the context's allocator hook (kiln.h). An arena is
 * a bump allocator freed at once; the graph and the kernel program each own one.
 * ---------------------------------------------------------------------------------- */
void *kiln_ir_malloc(const kiln_allocator *a, size_t n);          /* NULL on failure */
void *kiln_ir_realloc(const kiln_allocator *a, void *p, size_t n);
void kiln_ir_free(const kiln_allocator *a, void *p);
const kiln_allocator *kiln_ir_default_allocator(void);

typedef struct kiln_arena kiln_arena;
kiln_arena *kiln_arena_create(const kiln_allocator *a);
void *kiln_arena_alloc(kiln_arena *ar, size_t n);   /* zeroed, 16-aligned; NULL on OOM */
char *kiln_arena_strdup(kiln_arena *ar, const char *s);
void kiln_arena_destroy(kiln_arena *ar);

/* ------------------------------------------------------------------------------------
 * Ops and dtypes
 * ---------------------------------------------------------------------------------- */
typedef enum kiln_category {
  KILN_CAT_LEAF,
  KILN_CAT_ELEMENTWISE,
  KILN_CAT_MOVEMENT,
  KILN_CAT_REDUCE,
  KILN_CAT_WINDOW,
  KILN_CAT_CONTRACTION,
  KILN_CAT_OPAQUE,
} kiln_category;

/* Attribute fields, as a bitmask per op (ops.def, column ATTRS). */
enum {
  KILN_A_NONE = 0,
  KILN_A_AXIS = 1 << 0,
  KILN_A_AXES = 1 << 1,
  KILN_A_KEEPDIMS = 1 << 2,
  KILN_A_PERM = 1 << 3,
  KILN_A_STARTS = 1 << 4,
  KILN_A_STEPS = 1 << 5,
  KILN_A_LO = 1 << 6,
  KILN_A_HI = 1 << 7,
  KILN_A_VALUE = 1 << 8,
  KILN_A_KIND = 1 << 9,
  KILN_A_WINDOW = 1 << 10,
  KILN_A_STRIDES = 1 << 11,
  KILN_A_DILATIONS = 1 << 12,
  KILN_A_GROUPS = 1 << 13,
  KILN_A_COUNT_PAD = 1 << 14,
  KILN_A_K = 1 << 15,
};

/* The dtypes an elementwise op's or a reduction's operands may have (ops.def, column
 * OPERANDS). */
typedef enum kiln_operands {
  KILN_OPD_NONE,    /* not elementwise nor a reduction: the op's own rules (ir/infer.c) */
  KILN_OPD_FLOAT,   /* f32 f64 f16 bf16 */
  KILN_OPD_NUMERIC, /* any dtype but bool */
  KILN_OPD_INTBOOL, /* bool or an integer */
  KILN_OPD_ANY,
} kiln_operands;

/* Op properties (ops.def, column FLAGS, which says what each means). */
enum {
  KILN_OPF_DIFF = 1 << 0,  /* has a derivative */
  KILN_OPF_TRANS = 1 << 1, /* transcendental function */
  KILN_OPF_EXACT = 1 << 2, /* result exact in the operands' dtype */
  KILN_OPF_COND = 1 << 3,  /* well conditioned */
  KILN_OPF_BOOL = 1 << 4,  /* bool result */
  KILN_OPF_INDEX = 1 << 5, /* i64 index result */
  KILN_OPF_REMAP = 1 << 6, /* an index map alone: cheap to recompute */
};

typedef enum kiln_op {
#define X(name, cat, arity, operands, cost, flags, attrs, meaning) KILN_OP_##name,
#include "ops.def"
#undef X
  KILN_OP_COUNT
} kiln_op;

typedef struct kiln_op_info {
  const char *name;
  kiln_category category;
  int arity;              /* -1 variadic */
  kiln_operands operands; /* elementwise ops: KILN_OPD_* */
  int32_t cost;           /* elementwise ops: flop per element (recompute cost model) */
  uint32_t flags;         /* KILN_OPF_* */
  uint32_t attrs;         /* KILN_A_* */
  const char *meaning;
} kiln_op_info;

extern const kiln_op_info kiln_op_table[KILN_OP_COUNT];
const char *kiln_op_name(kiln_op op);
/* Whether op has property flag (KILN_OPF_*); false for an op out of range. */
bool kiln_op_has(kiln_op op, uint32_t flag);
/* The elementwise op reduction op folds its values with: add for reduce_sum, mul for
 * reduce_prod, max, min; KILN_OP_COUNT for argmax/argmin (they compare instead) and for
 * an op that is not a reduction. */
kiln_op kiln_op_combine(kiln_op op);
/* Whether elementwise or reduction op accepts operands of dtype t (of the values, for
 * select); false for an op of another category (ops.def OPERANDS). */
bool kiln_op_accepts(kiln_op op, kiln_dtype t);

/* The ops of each category, in ops.def order, as lists of a macro F applied to each name:
 * KILN_OPS_MOVEMENT(KILN_OP_CASE) expands to the case labels of every movement op. A
 * switch over kiln_op lists every op, with no default:, so that -Wswitch names each
 * switch an op added to ops.def is missing from; a switch that handles only some ops of
 * one category groups the rest with these lists. ir/core.c checks the lists against
 * ops.def at compile time (every op in exactly one list, the list of its category). */
#define KILN_OP_CASE(name) case KILN_OP_##name:
#define KILN_OPS_LEAF(F) F(input) F(constant)
#define KILN_OPS_ELEMENTWISE(F) KILN_OPS_UNARY(F) KILN_OPS_BINARY(F) F(select) F(cast)
/* The elementwise ops of one operand (cast aside) and of two (ops.def's two groups). */
#define KILN_OPS_UNARY(F)                                                                                \
  F(neg) F(abs) F(exp) F(log) F(sqrt) F(rsqrt) F(recip) F(tanh) F(sigmoid) F(erf) F(sin) F(cos) F(floor) \
  F(ceil) F(round) F(sign) F(not) F(isnan) F(atan)
#define KILN_OPS_BINARY(F) \
  F(add) F(sub) F(mul) F(div) F(pow) F(max) F(min) F(mod) F(and) F(or) F(xor) F(eq) F(ne) F(lt) F(le) F(gt) F(ge)
#define KILN_OPS_MOVEMENT(F) \
  F(reshape) F(permute) F(broadcast) F(slice) F(pad) F(concat) F(reverse) F(gather) F(gather_elements) F(iota)
#define KILN_OPS_REDUCE(F) F(reduce_sum) F(reduce_max) F(reduce_min) F(reduce_prod) F(argmax) F(argmin)
#define KILN_OPS_WINDOW(F) F(pool) F(pool_cl)
#define KILN_OPS_CONTRACTION(F) F(dot) F(conv) F(conv_cl)
#define KILN_OPS_OPAQUE(F) F(topk) F(nonzero) F(scatter)
/* Every op but those of one category, for a switch that handles only that category's
 * ops (each listed). */
#define KILN_OPS_NOT_ELEMENTWISE(F) \
  KILN_OPS_LEAF(F) KILN_OPS_MOVEMENT(F) KILN_OPS_REDUCE(F) KILN_OPS_WINDOW(F) KILN_OPS_CONTRACTION(F) KILN_OPS_OPAQUE(F)
#define KILN_OPS_NOT_REDUCE(F)                                                                             \
  KILN_OPS_LEAF(F) KILN_OPS_ELEMENTWISE(F) KILN_OPS_MOVEMENT(F) KILN_OPS_WINDOW(F) KILN_OPS_CONTRACTION(F) \
  KILN_OPS_OPAQUE(F)
#define KILN_OPS_NOT_MOVEMENT(F)                                                                          \
  KILN_OPS_LEAF(F) KILN_OPS_ELEMENTWISE(F) KILN_OPS_REDUCE(F) KILN_OPS_WINDOW(F) KILN_OPS_CONTRACTION(F) \
  KILN_OPS_OPAQUE(F)
/* "elementwise", "reduce", ... ("?" out of range). */
const char *kiln_category_name(kiln_category c);
bool kiln_op_from_name(const char *name, kiln_op *op);

enum { KILN_POOL_MAX = 0, KILN_POOL_AVG = 1, KILN_POOL_SUM = 2 };

/* dtypes: kiln_dtype is public (kiln.h). */
size_t kiln_dtype_size(kiln_dtype t);  /* bool is 1 byte */
const char *kiln_dtype_name(kiln_dtype t); /* "f32", "i64", "bool", ... */
bool kiln_dtype_from_name(const char *s, kiln_dtype *t);
bool kiln_dtype_is_float(kiln_dtype t);  /* f32 f64 f16 bf16 */
bool kiln_dtype_is_int(kiln_dtype t);    /* i8 i16 i32 i64 u8 */
float kiln_f16_to_f32(uint16_t h);
uint16_t kiln_f32_to_f16(float f);       /* round to nearest even */
float kiln_bf16_to_f32(uint16_t h);
uint16_t kiln_f32_to_bf16(float f);      /* round to nearest even */

/* ------------------------------------------------------------------------------------
 * Shapes
 * ---------------------------------------------------------------------------------- */
#define KILN_MAX_RANK 8

typedef struct kiln_shape {
  int32_t rank;
  int64_t dims[KILN_MAX_RANK];
} kiln_shape;

int64_t kiln_shape_numel(const kiln_shape *s); /* 1 for rank 0 */
bool kiln_shape_eq(const kiln_shape *a, const kiln_shape *b);
kiln_shape kiln_shape_make(int32_t rank, const int64_t *dims);
/* Row-major strides in elements. */
void kiln_shape_strides(const kiln_shape *s, int64_t *strides);
/* s permuted as the permute op does: dim d of the result is dim perm[d] of s. */
kiln_shape kiln_shape_permuted(const kiln_shape *s, const int32_t *perm);
/* Channels-last forms (conv_cl, pool_cl; the layout pass makes them). As permute perms:
 * kiln_cl_perm: data [N, C, s...] -> [N, s..., C] (to_cl) or back;
 * kiln_cl_weight_perm: conv weights [Co, Ci/G, k...] -> [k..., Ci/G, Co] (to_cl) or back. */
void kiln_cl_perm(int32_t rank, bool to_cl, int32_t *perm);
void kiln_cl_weight_perm(int32_t rank, bool to_cl, int32_t *perm);
/* "[2,3,4]" into buf; KILN_SHAPE_STR(s) formats into a temporary for one expression. */
const char *kiln_shape_str(const kiln_shape *s, char *buf, size_t n);
#define KILN_SHAPE_STR(s) kiln_shape_str((s), (char[160]){0}, 160)

/* ------------------------------------------------------------------------------------
 * Text buffers (ir/strbuf.c): grow through the allocator; out of memory is sticky in .oom.
 * Start with {.a = allocator}; the text is .s (NUL-terminated, NULL while empty).
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_strbuf {
  const kiln_allocator *a;
  char *s;
  size_t len, cap;
  bool oom;
} kiln_strbuf;

bool kiln_strbuf_reserve(kiln_strbuf *b, size_t extra);
void kiln_strbuf_printf(kiln_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kiln_strbuf_puts(kiln_strbuf *b, const char *s);
void kiln_strbuf_putc(kiln_strbuf *b, char c);

/* ------------------------------------------------------------------------------------
 * Graph IR. A DAG of single-output nodes in topological order (inputs of node i are < i).
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_attrs {
  int32_t axis;                        /* KILN_A_AXIS: normalized, 0 <= axis < rank */
  int32_t n_axes;                      /* KILN_A_AXES: sorted, unique, normalized */
  int32_t axes[KILN_MAX_RANK];
  int32_t keepdims;                    /* KILN_A_KEEPDIMS: 0 or 1 */
  int32_t perm[KILN_MAX_RANK];         /* KILN_A_PERM: one per output dim */
  int64_t starts[KILN_MAX_RANK];       /* KILN_A_STARTS: one per dim, in range */
  int64_t steps[KILN_MAX_RANK];        /* KILN_A_STEPS: one per dim, nonzero */
  int64_t lo[KILN_MAX_RANK];           /* KILN_A_LO: pad: one per dim; pool/conv: per spatial dim */
  int64_t hi[KILN_MAX_RANK];           /* KILN_A_HI: as lo */
  double value;                        /* KILN_A_VALUE: pad fill value */
  int32_t kind;                        /* KILN_A_KIND: op-specific, see ops.def */
  int64_t window[KILN_MAX_RANK];       /* KILN_A_WINDOW: per spatial dim */
  int64_t strides[KILN_MAX_RANK];      /* KILN_A_STRIDES: per spatial dim */
  int64_t dilations[KILN_MAX_RANK];    /* KILN_A_DILATIONS: per spatial dim */
  int32_t groups;                      /* KILN_A_GROUPS */
  int32_t count_include_pad;           /* KILN_A_COUNT_PAD: avg pool divides by window size */
  int64_t k;                           /* KILN_A_K: topk */
} kiln_attrs;

typedef struct kiln_node {
  kiln_op op;
  kiln_dtype dtype;
  kiln_shape shape;
  int32_t n_in;
  int32_t *in;          /* n_in node ids, all < this node's id; owned by the graph arena */
  int32_t index;        /* input: graph input number; constant: constant store index */
  kiln_attrs a;
  const char *name;     /* source (ONNX) node name, for errors and reports; never NULL */
} kiln_node;

typedef struct kiln_const {
  kiln_dtype dtype;
  kiln_shape shape;
  void *data;           /* allocator-owned, numel * dtype size bytes; bool = 1 byte 0/1 */
  size_t nbytes;
  const char *name;
} kiln_const;

typedef struct kiln_graph_io {
  int32_t node;         /* the input/output node id */
  const char *name;
  const char *dim_names[KILN_MAX_RANK]; /* inputs: symbolic dim names (ONNX dim_param) or NULL */
} kiln_graph_io;

/* struct kiln_graph is the public opaque handle's definition. */
struct kiln_graph {
  const kiln_allocator *alloc;
  kiln_arena *arena;        /* strings, input lists */
  kiln_node *nodes;         /* grows by realloc; ids are indices */
  int32_t n_nodes, cap_nodes;
  kiln_const *consts;
  int32_t n_consts, cap_consts;
  kiln_graph_io *inputs, *outputs;
  int32_t n_inputs, n_outputs, cap_inputs, cap_outputs;
  const char *name;         /* model name, used for AOT prefixes */
  kiln_diag diag;           /* builder errors are sticky here; a failed builder returns -1 */
};

kiln_graph *kiln_ir_graph_create(const kiln_allocator *a, const char *name);
void kiln_ir_graph_destroy(kiln_graph *g);
/* Deep copy (constants are copied). */
kiln_graph *kiln_ir_graph_clone(const kiln_graph *g);

/* Raw node append: no inference, no checks but the size check below (passes and the
 * parser use it; run the verifier after). `in` is copied. Returns the new id or -1 on OOM
 * or a refused shape (diag set). */
int32_t kiln_ir_append(kiln_graph *g, kiln_op op, kiln_dtype dt, const kiln_shape *shape,
                       int32_t n_in, const int32_t *in, const kiln_attrs *a, const char *name);
/* KILN_OK when a dt tensor of shape s is acceptable (rank 0..8, dims >= 0, at most
 * 256 GiB, no overflow); otherwise KILN_ERR_SHAPE with g->diag naming `name`. Appending a
 * node or a constant checks this; code that allocates a buffer for a computed shape before
 * making a node of it (importers folding at load time) calls it first. */
kiln_status kiln_ir_check_size(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, const char *name);
/* Constant store: copies data. Returns the constant index or -1. */
int32_t kiln_ir_add_const(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, const void *data,
                          const char *name);
int32_t kiln_ir_add_output(kiln_graph *g, int32_t node, const char *name);
/* Appends an entry to the graph's input list for input node `node` (copies the name and
 * the first `rank` dim_names, which may be NULL). Returns the input number or -1 (OOM).
 * kiln_ir_input calls it; the parser and passes that rebuild graphs use it directly. */
int32_t kiln_ir_add_input_io(kiln_graph *g, int32_t node, const char *name,
                             const char *const *dim_names, int32_t rank);

/* --- Builder: shape-inferring constructors used by the C API and the ONNX importers.
 * Each checks its operands (dtype, rank, attribute ranges), infers the output shape,
 * and on error sets g->diag naming `name` and returns -1. Any operand of -1 returns -1
 * at once (errors propagate without a second message). Negative axes are normalized.
 * Binary/ternary elementwise ops apply numpy broadcasting by inserting broadcast nodes.
 */
int32_t kiln_ir_input(kiln_graph *g, const char *name, kiln_dtype dt, const kiln_shape *s,
                      const char *const *dim_names /* may be NULL */);
int32_t kiln_ir_constant(kiln_graph *g, const char *name, kiln_dtype dt, const kiln_shape *s,
                         const void *data);
int32_t kiln_ir_scalar(kiln_graph *g, kiln_dtype dt, double v, const char *name); /* rank-0 const */
int32_t kiln_ir_unary(kiln_graph *g, kiln_op op, int32_t x, const char *name);
int32_t kiln_ir_binary(kiln_graph *g, kiln_op op, int32_t a, int32_t b, const char *name);
int32_t kiln_ir_mod(kiln_graph *g, int32_t a, int32_t b, int fmod, const char *name);
int32_t kiln_ir_select(kiln_graph *g, int32_t c, int32_t a, int32_t b, const char *name);
int32_t kiln_ir_cast(kiln_graph *g, int32_t x, kiln_dtype to, const char *name);
int32_t kiln_ir_reshape(kiln_graph *g, int32_t x, const kiln_shape *s, const char *name);
int32_t kiln_ir_permute(kiln_graph *g, int32_t x, const int32_t *perm, const char *name);
int32_t kiln_ir_broadcast(kiln_graph *g, int32_t x, const kiln_shape *s, const char *name);
/* Slice with per-axis start/step and output counts (all dims; already normalized). */
int32_t kiln_ir_slice(kiln_graph *g, int32_t x, const int64_t *starts, const int64_t *steps,
                      const int64_t *counts, const char *name);
int32_t kiln_ir_pad(kiln_graph *g, int32_t x, const int64_t *lo, const int64_t *hi, double value,
                    const char *name);
int32_t kiln_ir_concat(kiln_graph *g, int32_t n, const int32_t *xs, int32_t axis, const char *name);
int32_t kiln_ir_reverse(kiln_graph *g, int32_t x, int32_t n_axes, const int32_t *axes,
                        const char *name);
int32_t kiln_ir_gather(kiln_graph *g, int32_t data, int32_t indices, int32_t axis, const char *name);
int32_t kiln_ir_gather_elements(kiln_graph *g, int32_t data, int32_t indices, int32_t axis,
                                const char *name);
int32_t kiln_ir_iota(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, int32_t axis, const char *name);
/* op is one of reduce_sum/max/min/prod. n_axes == 0 reduces nothing (identity). */
int32_t kiln_ir_reduce(kiln_graph *g, kiln_op op, int32_t x, int32_t n_axes, const int32_t *axes,
                       int keepdims, const char *name);
int32_t kiln_ir_arg(kiln_graph *g, kiln_op op /* argmax/argmin */, int32_t x, int32_t axis,
                    int keepdims, int select_last, const char *name);
/* Spatial arrays have rank-2 entries. */
int32_t kiln_ir_pool(kiln_graph *g, int32_t x, int kind, const int64_t *window,
                     const int64_t *strides, const int64_t *dilations, const int64_t *lo,
                     const int64_t *hi, int count_include_pad, const char *name);
/* Batched matmul with numpy matmul semantics: 1-D operands are promoted and the added
 * dim removed after; batch dims broadcast (explicit broadcast nodes inserted). */
int32_t kiln_ir_matmul(kiln_graph *g, int32_t a, int32_t b, const char *name);
int32_t kiln_ir_conv(kiln_graph *g, int32_t x, int32_t w, const int64_t *strides,
                     const int64_t *dilations, const int64_t *lo, const int64_t *hi,
                     int32_t groups, const char *name);
int32_t kiln_ir_topk(kiln_graph *g, int32_t x, int64_t k, int32_t axis, int largest, const char *name);
int32_t kiln_ir_scatter(kiln_graph *g, int32_t data, int32_t indices, int32_t updates, int32_t axis,
                        int reduction, const char *name);

/* Constant data of node v if it is a constant node, else NULL. */
const kiln_const *kiln_ir_const_of(const kiln_graph *g, int32_t v);

/* Number of uses of each node (graph outputs count as uses). users must hold n_nodes. */
void kiln_ir_count_uses(const kiln_graph *g, int32_t *uses);

/* ------------------------------------------------------------------------------------
 * Text form. Prints and parses back exactly (constants are printed losslessly).
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_print_options {
  bool elide_constants; /* print large constants as "..." (dumps only; does not parse) */
} kiln_print_options;

kiln_status kiln_ir_print(const kiln_graph *g, FILE *f, const kiln_print_options *o);
/* Into a malloc'd (allocator) string. */
char *kiln_ir_print_to_string(const kiln_graph *g, const kiln_print_options *o);
kiln_status kiln_ir_parse(const kiln_allocator *a, const char *text, const char *filename,
                          kiln_graph **out, kiln_diag *d);

/* Verifier: types, shapes, topological order, attribute ranges, ids. */
kiln_status kiln_ir_verify(const kiln_graph *g, kiln_diag *d);

/* Shape/dtype inference for one node given its op, attrs and inputs (used by the builder
 * and the verifier, so both agree). Also checks dtypes and attribute ranges.
 * *dt and *shape are outputs, except where the op's result is not determined by its inputs
 * and attrs; there they are IN/OUT: the caller sets the requested value and inference
 * checks it (and leaves it):
 *   *dt    in/out for cast (target dtype) and iota (result dtype);
 *   *shape in/out for reshape (target), broadcast (target), slice (counts), iota (shape)
 *          and nonzero ([rank, n]: n).
 * input/constant are leaves and are not inferred (KILN_ERR_INVALID_ARGUMENT).
 * Errors: KILN_ERR_SHAPE (shapes/dtypes do not fit) or KILN_ERR_INVALID_ARGUMENT (bad op,
 * arity, ids or attributes), with a message that starts with the op name. */
kiln_status kiln_ir_infer(const kiln_graph *g, kiln_op op, int32_t n_in, const int32_t *in,
                          const kiln_attrs *a, kiln_dtype *dt, kiln_shape *shape, kiln_diag *d);

/* ------------------------------------------------------------------------------------
 * Target description: what a backend can run and the numbers its schedules use, as data.
 * Each backend fills one (codegen/: kiln_llvm_target_desc, cuda/: kiln_cuda_target_desc);
 * the passes ask it, never which target it is.
 * ---------------------------------------------------------------------------------- */
typedef enum kiln_sched_model {
  KILN_SCHED_LOOP_NEST, /* a CPU: a parallel loop over output rows, vectorized inner loop */
  KILN_SCHED_SIMT,      /* a GPU: one thread per output element, or one warp per row */
} kiln_sched_model;

typedef struct kiln_target_desc {
  kiln_target target;        /* for reports only ("cpu", "cuda"): passes never test it */
  kiln_sched_model model;    /* which schedule the schedule pass makes */
  /* capabilities */
  bool gemm_prologue;        /* a GEMM's pack sub-kernel may compute its A operand (pack_a) */
  bool sibling_pairs;        /* two sibling LOOP kernels (with_next) run as one loop nest */
  bool conv_channels_last;   /* conv_cl / pool_cl GEMM convolutions with A packs */
  bool gemm_generated;       /* generated GEMM microkernels (below) for a GEMM whose B is
                                a constant, packed into panels at compile time */
  int32_t simd_bits;         /* ... their vector registers' width, */
  int32_t simd_regs;         /* ... and how many there are */
  /* loop-nest schedules */
  int32_t vector_bits;       /* vector width the inner loop is vectorized for */
  int64_t grain_elems;       /* output elements (times reduction work) per parallel chunk */
  int64_t stream_min_bytes;  /* outputs at least this large get non-temporal stores */
  int64_t prefetch_min_bytes;/* inputs at least this large are prefetched ... */
  int32_t prefetch_bytes;    /* ... this many bytes ahead of each vector load */
  int64_t row_cache_max;     /* longest row a row cache holds (elements) */
  int32_t cache_line;        /* bytes */
  /* SIMT schedules */
  int32_t warp;              /* threads that run in lock step and shuffle among themselves */
  int32_t block;             /* threads per block of a launch */
  /* contractions */
  int64_t pack_tile_bytes;   /* a GEMM pack tile (im2col rows, a prologue) stays within this */
} kiln_target_desc;

/* The generic description of a target of schedule model m: every capability off, the
 * numbers Kiln's schedules were measured with (a backend starts from it and says what it
 * can do). */
void kiln_ir_target_desc_default(kiln_sched_model m, kiln_target_desc *d);

/* ------------------------------------------------------------------------------------
 * Kernel IR: what fusion produces and both backends render.
 *
 * A kiln_kprogram is a list of kernels over a buffer table. A LOOP kernel computes one
 * scalar expression DAG (kiln_kx) at every point of its output domain and stores it into
 * its output buffer. Loop variables 0..out.rank-1 index the output; variables from
 * out.rank on belong to REDUCE nodes, each of which loops over its own contiguous range of
 * variables. Index arithmetic is part of the same DAG, in i64.
 * ---------------------------------------------------------------------------------- */
typedef enum kiln_kx_kind {
  KILN_KX_CONST,   /* value in .f (float dtypes) or .i (int/bool dtypes) */
  KILN_KX_VAR,     /* loop variable .var, i64 */
  KILN_KX_LOAD,    /* buffer .buf at element offset a[0] (i64); if a[1] >= 0 it is a bool mask:
                      where false the load is not performed and the value is .f / .i */
  KILN_KX_ALU,     /* elementwise op .op (ops.def ELEMENTWISE) over a[0..arity-1]; .kind for mod;
                      cast is ALU with op KILN_OP_cast to .dtype */
  KILN_KX_REDUCE,  /* .op in reduce_sum/max/min/prod/argmax/argmin: loops variables
                      [.var, .var + .n_vars) and accumulates a[0]; argmax/argmin (one var)
                      yield the i64 variable value of the best (ties: first unless .kind=1) */
  KILN_KX_CHECK,   /* run-time check: a[0] is a bool that must hold wherever the node is
                      computed; the value is a[1]'s (dtype = a[1]'s), so the check sits in the
                      scope of the index it guards. Where a[0] is false the kernel reports an
                      error through the run's error word (runtime ABI, rt.h) and goes on.
                      For the message: .op is the graph op checked (gather, gather_elements;
                      div, mod: an integer divisor is nonzero), .var the index of its node in
                      the kernel's sources (-1: unknown), .i the size of the indexed dim
                      (valid indices are [-.i, .i); 0 for div/mod). */
} kiln_kx_kind;

typedef struct kiln_kx {
  kiln_kx_kind kind;
  kiln_dtype dtype;
  kiln_op op;
  int32_t kind_attr;
  int32_t a[3];         /* operand kx ids (earlier in the array), -1 unused */
  int32_t buf;          /* LOAD */
  int32_t var, n_vars;  /* VAR, REDUCE */
  double f;             /* CONST / LOAD fill */
  int64_t i;            /* CONST / LOAD fill */
} kiln_kx;

typedef enum kiln_kernel_kind {
  KILN_KERNEL_LOOP,
  KILN_KERNEL_GEMM,     /* C = op(A) * op(B) over batches; f32 (or f64), library call */
  KILN_KERNEL_OPAQUE,   /* runtime routine for an OPAQUE graph op */
} kiln_kernel_kind;

typedef struct kiln_gemm_desc {
  int32_t a_buf, b_buf, c_buf;
  int64_t a_off, b_off, c_off;   /* element offsets */
  int32_t trans_a, trans_b;
  int64_t m, n, k, lda, ldb, ldc;
  int32_t n_batch;               /* 0..2 batch loops */
  int64_t batch[2];
  int64_t a_bstride[2], b_bstride[2], c_bstride[2]; /* element strides per batch loop, may be 0 */
  /* Fused prologue (the kernel's `pack` sub-kernel, when set): B is not stored anywhere;
   * it is computed tile by tile into b_buf, a scratch buffer of k x tile_n elements
   * (ldb = tile_n, trans_b = 0, b_bstride = 0). Before packing a tile the runtime stores
   * (flattened batch index, first column of the tile) as two i64 into param_buf, which
   * the pack expression loads. Columns past n in the last tile are ignored. */
  int64_t tile_n;                /* 0: no pack */
  int32_t param_buf;             /* -1: none */
  /* The pack's domain is [k, tile_n] or, in whole output rows, [k, tile_n / pack_last,
   * pack_last] (the same layout): it runs k * tile_n / pack_last rows of pack_last. */
  int64_t pack_last;
  /* pack_a: the pack computes tiles of A instead (a channels-last convolution's im2col
   * rows): tile_n rows of A at a time into a_buf, a scratch buffer of tile_n x k elements
   * (lda = k, trans_a = 0, a_bstride = 0); param_buf gets (flattened batch index, first
   * row of the tile); the pack's domain is [tile_n, k] or [tile_n, k / pack_last,
   * pack_last] and it runs tile_n * k / pack_last rows of pack_last; the epilogue runs
   * over the tile's rows of C. Rows past m in the last tile are ignored. With trans_a as
   * well, the tile is stored transposed, as B's is (k x tile_n, lda = tile_n), and the
   * pack's domain is [k, tile_n] or [k, tile_n / pack_last, pack_last]. */
  int32_t pack_a;
  /* Fused epilogue (the kernel's `epilogue` sub-kernel, when set): run over the output
   * rows of each finished tile; epi_last = the epilogue domain's last extent. */
  int64_t epi_last;
  /* The program's buffer count, set by the CPU backend where it embeds the descriptor (0:
   * unknown): the runtime then runs packed tiles in parallel, each worker with its own
   * copy of bufs pointing the tile and parameter buffers at scratch of its own. */
  int32_t n_bufs;
  /* A direct convolution (a channels-last conv_cl whose im2col matrix is never built:
   * conv_rank > 0, only generated code runs it): A is the input in a_buf, images
   * [spatial..., ci] a_bstride apart, and row p of the product (output pixel p of its
   * image) at reduction index (tap, c) reads x[o(p) * stride + k(tap) * dilation - lo, c]
   * (0 in the padding): taps in row-major order over conv_k, o(p) over conv_out. lda is
   * the elements of an input pixel: conv_ci, or where the last spatial dim's kw taps
   * merged into one run of adjacent pixels (no padding along it, conv_k[last] = 1),
   * conv_ci / kw. B is the weights [taps, ci] x co. */
  int32_t conv_rank;
  int64_t conv_ci;
  int64_t conv_in[3], conv_out[3], conv_k[3], conv_stride[3], conv_dil[3], conv_lo[3];
} kiln_gemm_desc;

/* How a divide a / b of a LOOP kernel is computed (kiln_schedule.div). */
typedef enum kiln_div_mode {
  KILN_DIV_PLAIN,       /* a divide */
  KILN_DIV_CONST_RECIP, /* b is a constant with a normal reciprocal: a * (1/b) */
  KILN_DIV_ROW_RECIP,   /* b is invariant in the loop the divide runs in: a * RN(1/(b s)) * s,
                           1/(b s) computed once outside it (s a power of two keeping it normal) */
} kiln_div_mode;

/* How a kernel runs on its target: filled by the schedule pass (passes/schedule.c) after
 * memory planning, for every kernel and sub-kernel, and obeyed by the renderers, which
 * decide none of it. Arrays are in the program's arena. */
typedef struct kiln_schedule {
  bool set;                /* filled in (kiln_ir_kprogram_verify requires it once scheduled) */
  kiln_sched_model model;
  /* loop nest: the output's dims but the last are one parallel loop over rows, handed
   * to the thread pool in chunks; the last dim is the vectorized column loop */
  int64_t rows;            /* output elements / last extent */
  int64_t grain;           /* rows per chunk a worker takes (>= 1) */
  int32_t vector_bits;     /* width the column loop is vectorized for */
  bool stream;             /* also a variant with non-temporal stores, run where the outputs
                              are cache-line aligned (and its second, with_next) */
  int32_t prefetch_bytes;  /* software prefetches this far ahead of the vector loads of: */
  int32_t n_prefetch;
  int32_t *prefetch;       /* buffers (large inputs of the kernel) */
  /* per kx (NULL: none): the REDUCE kx whose body computes kx's value for the current row
   * (a row cache: softmax's exp computed once, kept in a stack array), or -1 */
  int32_t *row_cache;
  uint8_t *div;            /* per kx (NULL: all plain): kiln_div_mode of a divide */
  /* SIMT */
  bool warp_per_row;       /* one warp per output row, its row-invariant reductions shared */
  int32_t block;           /* threads per block */
  /* GEMM: the runtime's library call (KILN_GEMM_LIBRARY), or generated code
   * (KILN_GEMM_GENERATED): C's rows in tasks of mc rows (times the batch), each computing
   * its rows panel by panel in micro-tiles of mr rows x nv vectors of `lanes` floats held
   * in registers, B read from packed_b, a constant of panels [np][k][nv * lanes] (zero
   * past n); then the task's rows through the epilogue. With col_groups > 1 (few rows),
   * tasks also split the panels into that many groups and the epilogue runs after all.
   * A task's reduction runs in blocks of kc (over all its panels and rows before the next
   * block, a panel's block kept in L1); kc is k for a direct convolution. */
  uint8_t gemm_engine;
  int32_t mr, nv, lanes;
  int64_t mc, kc;
  int32_t col_groups;
  int32_t packed_b;
} kiln_schedule;

enum { KILN_GEMM_LIBRARY = 0, KILN_GEMM_GENERATED = 1 };

typedef struct kiln_kernel {
  kiln_kernel_kind kind;
  const char *name;              /* "k3_exp_add" */
  int32_t n_sources;             /* graph node names this kernel covers (for reports) */
  const char **sources;
  /* Id, in the graph that was lowered, of the node whose value out_buf holds once the
   * kernel has run (KILN_VERIFY compares it with the interpreter's value of that node);
   * -1 when the buffer is no graph value (an im2col column matrix). */
  int32_t node;
  int32_t out_buf;
  kiln_dtype out_dtype;
  kiln_shape out;                /* output domain */
  /* LOOP */
  int32_t n_vars;                /* >= out.rank */
  int64_t *extent;               /* n_vars extents */
  int32_t n_kx;
  kiln_kx *kx;
  int32_t root;                  /* kx stored at each output point */
  /* GEMM */
  kiln_gemm_desc gemm;
  /* GEMM: fused sub-kernels (LOOP kernels; NULL when absent), executed tile by tile with
   * the product so the data they touch is still in cache:
   *   pack     computes one tile of B: its domain is [k, tile_n], out_buf = gemm.b_buf
   *            (with gemm.pack_a, one tile of A: [tile_n, k], out_buf = gemm.a_buf);
   *   epilogue its domain is this kernel's output domain; it reads the product from
   *            gemm.c_buf only at its own element (so it may run in place) and stores to
   *            out_buf (== this kernel's out_buf). gemm.c_buf must then be dense over the
   *            output domain (c_off 0, ldc n, dense batch strides). */
  struct kiln_kernel *pack, *epilogue;
  /* For reports: the category of the node the kernel is built around (contraction for a
   * GEMM with its epilogue, reduce for a row-wise normalization, ...). */
  kiln_category category;
  /* LOOP: a sibling of the next kernel (passes/lower.c pair_siblings): both are
   * elementwise over the same domain and read a common input, neither reads the other's
   * output and neither has a CHECK. The CPU backend runs the two in one loop nest, so
   * the common input is read from memory once; memory planning gives the two one step
   * (none of their buffers share bytes). Other backends may run them one after the
   * other. */
  bool with_next;
  /* The schedule (above); set by the schedule pass. */
  kiln_schedule sched;
  /* OPAQUE: the graph op with its attrs; input buffers in in_bufs */
  kiln_op op;
  kiln_attrs attrs;
  int32_t n_in_bufs;
  int32_t *in_bufs;
} kiln_kernel;

typedef enum kiln_buffer_kind {
  KILN_BUF_INPUT,    /* graph input .index */
  KILN_BUF_OUTPUT,   /* graph output .index */
  KILN_BUF_CONST,    /* constant store entry .index */
  KILN_BUF_ARENA,    /* temporary at .offset bytes in the arena */
} kiln_buffer_kind;

typedef struct kiln_buffer {
  kiln_buffer_kind kind;
  kiln_dtype dtype;
  kiln_shape shape;
  int32_t index;
  int64_t offset;
  size_t nbytes;
  const char *name;
} kiln_buffer;

typedef struct kiln_fusion_refusal {
  const char *producer, *consumer; /* source node names */
  const char *reason;              /* "producer has 3 consumers and costs 40 flop/element" */
} kiln_fusion_refusal;

typedef struct kiln_kprogram {
  const kiln_allocator *alloc;
  kiln_arena *arena;             /* owns everything below */
  int32_t n_kernels;
  kiln_kernel *kernels;
  int32_t n_buffers;
  kiln_buffer *buffers;
  size_t arena_bytes;            /* set by memory planning */
  /* Fusions the lowering considered and refused, with the reason (for the fusion report). */
  int32_t n_refused;
  kiln_fusion_refusal *refused;
  /* Interface and constants, copied from the graph so the program stands alone. */
  int32_t n_inputs, n_outputs;
  kiln_graph_io *inputs, *outputs;  /* .node unused */
  kiln_dtype *in_dtypes, *out_dtypes;
  kiln_shape *in_shapes, *out_shapes;
  int32_t n_consts;
  kiln_const *consts;
  const char *name;
} kiln_kprogram;

/* Adds a constant of dt and shape s to p with a CONST buffer over it (*buf); returns its
 * data (zeroed, 64-byte aligned, in p's arena) for the caller to fill, or NULL when out
 * of memory. For passes that make constants of their own (packed weights). */
void *kiln_ir_kprogram_new_const(kiln_kprogram *p, kiln_dtype dt, const kiln_shape *s, const char *name, int32_t *buf);
/* "loop", "gemm", "opaque". */
const char *kiln_ir_kernel_kind_name(kiln_kernel_kind k);
kiln_kprogram *kiln_ir_kprogram_create(const kiln_allocator *a);
void kiln_ir_kprogram_destroy(kiln_kprogram *p);
/* What one kernel costs, for reports: bytes it reads (each buffer it loads counted once,
 * at its size; the second of a sibling pair does not count what the first loads) and
 * writes, and floating/integer value operations (index arithmetic not counted; a
 * contraction counts 2*m*n*k per product; each expression node counts once per distinct
 * value of the loop variables it depends on). Sub-kernels included. k is one of p's
 * kernels, or a kernel outside p (then no sibling rule). */
typedef struct kiln_kernel_stats {
  int64_t bytes_read, bytes_written, flops;
} kiln_kernel_stats;
void kiln_ir_kernel_stats(const kiln_kprogram *p, const kiln_kernel *k, kiln_kernel_stats *s);
/* The costs of p's kernels summed: the one source of the totals of the fusion report,
 * kiln_executable_stats and kiln bench (bytes moved = read + written). */
void kiln_ir_kprogram_totals(const kiln_kprogram *p, kiln_kernel_stats *total);

/* The number of operands (a[0..n-1]) kx x uses: a LOAD its offset and mask, an ALU its
 * op's arity (0 for an op out of range), a REDUCE its body, a CHECK its condition and
 * value. */
int kiln_ir_kx_n_operands(const kiln_kx *x);
/* Whether the value of kx x must be rounded to its dtype where it is computed: an ALU
 * or REDUCE of f16/bf16 whose op can leave the dtype's grid. Backends compute narrow
 * floats in f32 registers, but every graph node's output is of its declared dtype (ONNX;
 * the interpreter rounds each node, and so does any kernel boundary), so a fused chain
 * must round at the same points or its result would depend on the fusion level. Ops
 * that only move, pick or compare values of the dtype (KILN_OPF_EXACT in ops.def: neg,
 * abs, max, min, select, floor, ceil, round, sign, reduce_max/min) keep them on the grid;
 * a cast rounds in the backends' conversion. */
bool kiln_ir_kx_rounds_narrow(const kiln_kx *x);
/* Whether LOOP kernel k loads from buffer buf (false for a NULL k). */
bool kiln_ir_kernel_loads(const kiln_kernel *k, int32_t buf);
/* Whether LOOP kernels a and b (in this order) may run in one loop nest (kiln_kernel.
 * with_next): elementwise over the same domain, no CHECK, and neither reads the other's
 * output. Memory planning must then keep their buffers apart (it does for with_next). */
bool kiln_ir_siblings_ok(const kiln_kernel *a, const kiln_kernel *b);
/* The loop variables each kx of LOOP kernel k depends on (its own for a VAR, its
 * operands', less a REDUCE's own variables), into dep[0..n_kx); false (dep untouched)
 * when the kernel has more than 64 variables. */
bool kiln_ir_kx_deps(const kiln_kernel *k, uint64_t *dep);
/* Text dump of a kernel program (for kiln dump and golden tests). */
void kiln_ir_kprogram_print(const kiln_kprogram *p, FILE *f);
/* Checks operand order, dtypes, buffer ids, var ranges. */
kiln_status kiln_ir_kprogram_verify(const kiln_kprogram *p, kiln_diag *d);
/* The message for a data-dependent error that kernel k of p reported at run time through
 * the error word (a CHECK that failed, or an OPAQUE routine that refused its input data):
 * names what was checked, its source node and the kernel. */
void kiln_ir_kernel_error_message(const kiln_kprogram *p, int32_t k, char *out, size_t n);

#endif
