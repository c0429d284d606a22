/* core.c - the ir/ module's foundations: allocator and arenas, diagnostics, the op and
 * dtype tables, shapes, and the graph container (create, append, constants, outputs). */
#include "ir.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ diagnostics */
kiln_status kiln_diag_set(kiln_diag *d, kiln_status st, const char *fmt, ...) {
  if (!d) return st;
  if (d->status != KILN_OK) return d->status; /* sticky: first error wins */
  d->status = st;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->msg, sizeof d->msg, fmt, ap);
  va_end(ap);
  return st;
}

void kiln_diag_append(kiln_diag *d, const char *fmt, ...) {
  if (!d) return;
  size_t n = strlen(d->msg);
  if (n + 1 >= sizeof d->msg) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->msg + n, sizeof d->msg - n, fmt, ap);
  va_end(ap);
}

void kiln_progress_report(const kiln_progress *p, const char *fmt, ...) {
  if (!p || !p->fn) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  p->fn(p->user, msg);
}

_Noreturn void kiln_ir_assert_fail(const char *cond, const char *file, int line) {
  fprintf(stderr, "kiln: internal error: assertion '%s' failed at %s:%d\n", cond, file, line);
  abort();
}

/* ------------------------------------------------------------------ allocation */
static void *default_alloc(void *u, size_t n) { (void)u; return malloc(n); }
static void *default_realloc(void *u, void *p, size_t n) { (void)u; return realloc(p, n); }
static void default_free(void *u, void *p) { (void)u; free(p); }
static const kiln_allocator default_allocator = {default_alloc, default_realloc, default_free, NULL};

const kiln_allocator *kiln_ir_default_allocator(void) { return &default_allocator; }

void *kiln_ir_malloc(const kiln_allocator *a, size_t n) {
  if (!a) a = &default_allocator;
  return a->alloc(a->user, n ? n : 1);
}
void *kiln_ir_realloc(const kiln_allocator *a, void *p, size_t n) {
  if (!a) a = &default_allocator;
  return a->realloc(a->user, p, n ? n : 1);
}
void kiln_ir_free(const kiln_allocator *a, void *p) {
  if (!p) return;
  if (!a) a = &default_allocator;
  a->free(a->user, p);
}

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} arena_block;

struct kiln_arena {
  const kiln_allocator *alloc;
  arena_block *head;
};

kiln_arena *kiln_arena_create(const kiln_allocator *a) {
  kiln_arena *ar = kiln_ir_malloc(a, sizeof *ar);
  if (!ar) return NULL;
  ar->alloc = a ? a : &default_allocator;
  ar->head = NULL;
  return ar;
}

void *kiln_arena_alloc(kiln_arena *ar, size_t n) {
  n = (n + 15) & ~(size_t)15;
  arena_block *b = ar->head;
  if (!b || b->used + n > b->cap) {
    size_t cap = n > 65536 ? n : 65536;
    b = kiln_ir_malloc(ar->alloc, sizeof *b + cap);
    if (!b) return NULL;
    b->next = ar->head;
    b->used = 0;
    b->cap = cap;
    ar->head = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

char *kiln_arena_strdup(kiln_arena *ar, const char *s) {
  if (!s) s = "";
  size_t n = strlen(s) + 1;
  char *p = kiln_arena_alloc(ar, n);
  if (p) memcpy(p, s, n);
  return p;
}

void kiln_arena_destroy(kiln_arena *ar) {
  if (!ar) return;
  for (arena_block *b = ar->head, *nx; b; b = nx) {
    nx = b->next;
    kiln_ir_free(ar->alloc, b);
  }
  kiln_ir_free(ar->alloc, ar);
}

/* ------------------------------------------------------------------ op table */
const kiln_op_info kiln_op_table[KILN_OP_COUNT] = {
#define X(name, cat, arity, operands, cost, flags, attrs, meaning) \
  {#name, KILN_CAT_##cat, arity, KILN_OPD_##operands, cost, flags, attrs, meaning},
#include "ops.def"
#undef X
};

/* The category lists of ir.h against ops.def: each listed op is of the list's category
 * (the static_asserts), and every op is listed exactly once (the switch: -Wswitch names a
 * missing op, a duplicate is a duplicate case label). */
enum {
#define X(name, cat, arity, operands, cost, flags, attrs, meaning) KILN_OP_CAT_OF_##name = KILN_CAT_##cat,
#include "ops.def"
#undef X
};
#define ASSERT_CATEGORY(name, cat) \
  _Static_assert((int)KILN_OP_CAT_OF_##name == (int)KILN_CAT_##cat, #name " is not listed under its category in ir.h");
enum {
#define X(name, cat, arity, operands, cost, flags, attrs, meaning) KILN_OP_ARITY_OF_##name = arity,
#include "ops.def"
#undef X
};
#define IS_UNARY(name) _Static_assert(KILN_OP_ARITY_OF_##name == 1, #name " is listed in KILN_OPS_UNARY");
#define IS_BINARY(name) _Static_assert(KILN_OP_ARITY_OF_##name == 2, #name " is listed in KILN_OPS_BINARY");
KILN_OPS_UNARY(IS_UNARY)
KILN_OPS_BINARY(IS_BINARY)
#define IS_LEAF(name) ASSERT_CATEGORY(name, LEAF)
#define IS_ELEMENTWISE(name) ASSERT_CATEGORY(name, ELEMENTWISE)
#define IS_MOVEMENT(name) ASSERT_CATEGORY(name, MOVEMENT)
#define IS_REDUCE(name) ASSERT_CATEGORY(name, REDUCE)
#define IS_WINDOW(name) ASSERT_CATEGORY(name, WINDOW)
#define IS_CONTRACTION(name) ASSERT_CATEGORY(name, CONTRACTION)
#define IS_OPAQUE(name) ASSERT_CATEGORY(name, OPAQUE)
KILN_OPS_LEAF(IS_LEAF)
KILN_OPS_ELEMENTWISE(IS_ELEMENTWISE)
KILN_OPS_MOVEMENT(IS_MOVEMENT)
KILN_OPS_REDUCE(IS_REDUCE)
KILN_OPS_WINDOW(IS_WINDOW)
KILN_OPS_CONTRACTION(IS_CONTRACTION)
KILN_OPS_OPAQUE(IS_OPAQUE)

__attribute__((unused)) static bool every_op_is_listed_once(kiln_op op) {
  switch (op) {
  KILN_OPS_ELEMENTWISE(KILN_OP_CASE)
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
    return true;
  case KILN_OP_COUNT: break;
  }
  return false;
}

bool kiln_op_has(kiln_op op, uint32_t flag) {
  return (unsigned)op < KILN_OP_COUNT && (kiln_op_table[op].flags & flag) != 0;
}

kiln_op kiln_op_combine(kiln_op op) {
  switch (op) {
  case KILN_OP_reduce_sum: return KILN_OP_add;
  case KILN_OP_reduce_prod: return KILN_OP_mul;
  case KILN_OP_reduce_max: return KILN_OP_max;
  case KILN_OP_reduce_min: return KILN_OP_min;
  case KILN_OP_argmax: case KILN_OP_argmin:
  KILN_OPS_NOT_REDUCE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return KILN_OP_COUNT;
}

bool kiln_op_accepts(kiln_op op, kiln_dtype t) {
  if ((unsigned)op >= KILN_OP_COUNT || (unsigned)t >= KILN_DTYPE_COUNT) return false;
  switch (kiln_op_table[op].operands) {
  case KILN_OPD_NONE: return false;
  case KILN_OPD_FLOAT: return kiln_dtype_is_float(t);
  case KILN_OPD_NUMERIC: return t != KILN_BOOL;
  case KILN_OPD_INTBOOL: return t == KILN_BOOL || kiln_dtype_is_int(t);
  case KILN_OPD_ANY: return true;
  }
  return false;
}

const char *kiln_category_name(kiln_category c) {
  static const char *const names[] = {"leaf", "elementwise", "movement", "reduce", "window", "contraction", "opaque"};
  return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "?";
}

const char *kiln_op_name(kiln_op op) {
  return (unsigned)op < KILN_OP_COUNT ? kiln_op_table[op].name : "?";
}

bool kiln_op_from_name(const char *name, kiln_op *op) {
  for (int i = 0; i < KILN_OP_COUNT; i++)
    if (strcmp(kiln_op_table[i].name, name) == 0) {
      *op = (kiln_op)i;
      return true;
    }
  return false;
}

/* ------------------------------------------------------------------ dtypes */
static const struct {
  const char *name;
  size_t size;
} dtype_table[] = {
    [KILN_F32] = {"f32", 4}, [KILN_F64] = {"f64", 8}, [KILN_F16] = {"f16", 2},
    [KILN_BF16] = {"bf16", 2}, [KILN_I8] = {"i8", 1},  [KILN_I16] = {"i16", 2},
    [KILN_I32] = {"i32", 4}, [KILN_I64] = {"i64", 8}, [KILN_U8] = {"u8", 1},
    [KILN_BOOL] = {"bool", 1},
};
_Static_assert(sizeof dtype_table / sizeof dtype_table[0] == KILN_DTYPE_COUNT,
               "dtype table covers every kiln_dtype");

size_t kiln_dtype_size(kiln_dtype t) { return (unsigned)t < KILN_DTYPE_COUNT ? dtype_table[t].size : 0; }
const char *kiln_dtype_name(kiln_dtype t) {
  return (unsigned)t < KILN_DTYPE_COUNT ? dtype_table[t].name : "?";
}
bool kiln_dtype_from_name(const char *s, kiln_dtype *t) {
  for (int i = 0; i < KILN_DTYPE_COUNT; i++)
    if (strcmp(dtype_table[i].name, s) == 0) {
      *t = (kiln_dtype)i;
      return true;
    }
  return false;
}
bool kiln_dtype_is_float(kiln_dtype t) {
  return t == KILN_F32 || t == KILN_F64 || t == KILN_F16 || t == KILN_BF16;
}
bool kiln_dtype_is_int(kiln_dtype t) {
  return t == KILN_I8 || t == KILN_I16 || t == KILN_I32 || t == KILN_I64 || t == KILN_U8;
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float kiln_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    float v = ldexpf((float)man, -24); /* subnormal */
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t kiln_f32_to_f16(float f) {
  uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
  if (ax < 0x38800000u) {                                  /* subnormal or zero */
    float v = bits_f32(ax);
    /* scale so that the subnormal unit is 1, then round to nearest even */
    float s = v * 16777216.0f; /* 2^24 */
    uint32_t m = (uint32_t)nearbyintf(s);
    return (uint16_t)(sign | m);
  }
  uint32_t e = (ax >> 23) - 112, m = ax & 0x7fffff;
  uint32_t h = (e << 10) | (m >> 13);
  uint32_t rest = m & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float kiln_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
uint16_t kiln_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  uint32_t lsb = (x >> 16) & 1;
  return (uint16_t)((x + 0x7fff + lsb) >> 16);
}

/* ------------------------------------------------------------------ shapes */
int64_t kiln_shape_numel(const kiln_shape *s) {
  /* Saturates instead of overflowing (undefined) on a shape that has not been size-checked
   * yet; node shapes are (check_size), so for them this is the plain product. */
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++)
    if (s->dims[i] == 0) return 0;
  for (int i = 0; i < s->rank; i++)
    if (__builtin_mul_overflow(n, s->dims[i], &n)) return INT64_MAX;
  return n;
}
bool kiln_shape_eq(const kiln_shape *a, const kiln_shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return false;
  return true;
}
kiln_shape kiln_shape_make(int32_t rank, const int64_t *dims) {
  kiln_shape s;
  memset(&s, 0, sizeof s);
  s.rank = rank;
  for (int i = 0; i < rank && i < KILN_MAX_RANK; i++) s.dims[i] = dims[i];
  return s;
}
kiln_shape kiln_shape_permuted(const kiln_shape *s, const int32_t *perm) {
  kiln_shape r = *s;
  for (int32_t d = 0; d < s->rank; d++) r.dims[d] = s->dims[perm[d]];
  return r;
}

void kiln_cl_perm(int32_t rank, bool to_cl, int32_t *perm) {
  perm[0] = 0;
  for (int32_t d = 1; d < rank; d++) perm[d] = to_cl ? (d == rank - 1 ? 1 : d + 1) : (d == 1 ? rank - 1 : d - 1);
}

void kiln_cl_weight_perm(int32_t rank, bool to_cl, int32_t *perm) {
  for (int32_t d = 0; d < rank; d++) {
    if (to_cl) perm[d] = d < rank - 2 ? d + 2 : rank - 1 - d; /* [k..., ci, co] */
    else perm[d] = d < 2 ? rank - 1 - d : d - 2;              /* [co, ci, k...] */
  }
}

void kiln_shape_strides(const kiln_shape *s, int64_t *strides) {
  int64_t st = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    strides[i] = st;
    st *= s->dims[i];
  }
}

/* ------------------------------------------------------------------ graph container */
kiln_graph *kiln_ir_graph_create(const kiln_allocator *a, const char *name) {
  if (!a) a = &default_allocator;
  kiln_graph *g = kiln_ir_malloc(a, sizeof *g);
  if (!g) return NULL;
  memset(g, 0, sizeof *g);
  g->alloc = a;
  g->arena = kiln_arena_create(a);
  if (!g->arena) {
    kiln_ir_free(a, g);
    return NULL;
  }
  g->name = kiln_arena_strdup(g->arena, name ? name : "model");
  return g;
}

void kiln_ir_graph_destroy(kiln_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_consts; i++) kiln_ir_free(g->alloc, g->consts[i].data);
  kiln_ir_free(g->alloc, g->consts);
  kiln_ir_free(g->alloc, g->nodes);
  kiln_ir_free(g->alloc, g->inputs);
  kiln_ir_free(g->alloc, g->outputs);
  kiln_arena_destroy(g->arena);
  kiln_ir_free(g->alloc, g);
}

/* Grows *arr (of elem bytes) to hold at least n; false on OOM. */
static bool grow(const kiln_allocator *a, void **arr, int32_t *cap, int32_t n, size_t elem) {
  if (n <= *cap) return true;
  int32_t nc = *cap ? *cap * 2 : 16;
  while (nc < n) nc *= 2;
  void *p = kiln_ir_realloc(a, *arr, (size_t)nc * elem);
  if (!p) return false;
  *arr = p;
  *cap = nc;
  return true;
}

/* The largest tensor Kiln accepts (256 GiB), far above any real model's. Every node and
 * constant goes through check_size, so a malformed model's dims (1e12 elements, or a
 * product that overflows int64) are refused here, naming the node, before anything tries
 * to allocate or index them. */
#define MAX_TENSOR_BYTES ((int64_t)1 << 38)

static bool check_size(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, const char *what,
                       const char *name) {
  if (s->rank < 0 || s->rank > KILN_MAX_RANK) {
    kiln_diag_set(&g->diag, KILN_ERR_SHAPE, "%s '%s': rank %d not in 0..%d", what, name ? name : "",
                  (int)s->rank, KILN_MAX_RANK);
    return false;
  }
  int64_t bytes = (int64_t)kiln_dtype_size(dt);
  bool big = false;
  for (int i = 0; i < s->rank; i++) {
    if (s->dims[i] < 0) {
      kiln_diag_set(&g->diag, KILN_ERR_SHAPE, "%s '%s': negative dim %d (%lld)", what,
                    name ? name : "", i, (long long)s->dims[i]);
      return false;
    }
    if (s->dims[i] == 0) return true;
    if (big || bytes > MAX_TENSOR_BYTES / s->dims[i]) big = true; /* no overflow, keep checking dims */
    else bytes *= s->dims[i];
  }
  if (big) {
    char dims[256] = "";
    for (int i = 0; i < s->rank; i++)
      snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "," : "", (long long)s->dims[i]);
    kiln_diag_set(&g->diag, KILN_ERR_SHAPE,
                  "%s '%s': %s[%s] is larger than Kiln's limit of %lld bytes per tensor", what,
                  name ? name : "", kiln_dtype_name(dt), dims, (long long)MAX_TENSOR_BYTES);
    return false;
  }
  return true;
}

kiln_status kiln_ir_check_size(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, const char *name) {
  return check_size(g, dt, s, "node", name) ? KILN_OK : g->diag.status;
}

int32_t kiln_ir_append(kiln_graph *g, kiln_op op, kiln_dtype dt, const kiln_shape *shape,
                       int32_t n_in, const int32_t *in, const kiln_attrs *a, const char *name) {
  if (shape && !check_size(g, dt, shape, "node", name ? name : kiln_op_name(op))) return -1;
  if (!grow(g->alloc, (void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(kiln_node))) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding node '%s'", name ? name : "");
    return -1;
  }
  kiln_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->dtype = dt;
  if (shape) n->shape = *shape;
  n->n_in = n_in;
  if (n_in > 0) {
    n->in = kiln_arena_alloc(g->arena, sizeof(int32_t) * (size_t)n_in);
    if (!n->in) {
      kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding node '%s'", name ? name : "");
      return -1;
    }
    memcpy(n->in, in, sizeof(int32_t) * (size_t)n_in);
  }
  if (a) n->a = *a;
  n->name = kiln_arena_strdup(g->arena, name ? name : kiln_op_name(op));
  if (!n->name) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding node '%s'", name ? name : "");
    return -1;
  }
  return g->n_nodes++;
}

int32_t kiln_ir_add_const(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, const void *data,
                          const char *name) {
  if (!grow(g->alloc, (void **)&g->consts, &g->cap_consts, g->n_consts + 1, sizeof(kiln_const))) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding constant '%s'", name ? name : "");
    return -1;
  }
  if (!check_size(g, dt, s, "constant", name)) return -1;
  size_t nbytes = (size_t)kiln_shape_numel(s) * kiln_dtype_size(dt);
  void *p = kiln_ir_malloc(g->alloc, nbytes ? nbytes : 1);
  if (!p) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory for constant '%s' (%zu bytes)",
                  name ? name : "", nbytes);
    return -1;
  }
  if (data && nbytes) memcpy(p, data, nbytes);
  else if (nbytes) memset(p, 0, nbytes);
  kiln_const *c = &g->consts[g->n_consts];
  c->dtype = dt;
  c->shape = *s;
  c->data = p;
  c->nbytes = nbytes;
  c->name = kiln_arena_strdup(g->arena, name ? name : "const");
  return g->n_consts++;
}

int32_t kiln_ir_add_output(kiln_graph *g, int32_t node, const char *name) {
  if (node < 0) return -1;
  if (node >= g->n_nodes) {
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "output '%s' names node %d, which does not exist",
                  name ? name : "", node);
    return -1;
  }
  if (!grow(g->alloc, (void **)&g->outputs, &g->cap_outputs, g->n_outputs + 1, sizeof(kiln_graph_io))) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding output '%s'", name ? name : "");
    return -1;
  }
  kiln_graph_io *io = &g->outputs[g->n_outputs];
  memset(io, 0, sizeof *io);
  io->node = node;
  io->name = kiln_arena_strdup(g->arena, name ? name : "output");
  return g->n_outputs++;
}

/* Used by the builder's kiln_ir_input (build.c). */
int32_t kiln_ir_add_input_io(kiln_graph *g, int32_t node, const char *name,
                             const char *const *dim_names, int32_t rank);
int32_t kiln_ir_add_input_io(kiln_graph *g, int32_t node, const char *name,
                             const char *const *dim_names, int32_t rank) {
  if (!grow(g->alloc, (void **)&g->inputs, &g->cap_inputs, g->n_inputs + 1, sizeof(kiln_graph_io))) {
    kiln_diag_set(&g->diag, KILN_ERR_OUT_OF_MEMORY, "out of memory adding input '%s'", name ? name : "");
    return -1;
  }
  kiln_graph_io *io = &g->inputs[g->n_inputs];
  memset(io, 0, sizeof *io);
  io->node = node;
  io->name = kiln_arena_strdup(g->arena, name ? name : "input");
  for (int i = 0; dim_names && i < rank; i++)
    io->dim_names[i] = dim_names[i] ? kiln_arena_strdup(g->arena, dim_names[i]) : NULL;
  return g->n_inputs++;
}

kiln_graph *kiln_ir_graph_clone(const kiln_graph *src) {
  kiln_graph *g = kiln_ir_graph_create(src->alloc, src->name);
  if (!g) return NULL;
  for (int i = 0; i < src->n_consts; i++) {
    const kiln_const *c = &src->consts[i];
    if (kiln_ir_add_const(g, c->dtype, &c->shape, c->data, c->name) < 0) goto fail;
  }
  for (int i = 0; i < src->n_nodes; i++) {
    const kiln_node *n = &src->nodes[i];
    int32_t id = kiln_ir_append(g, n->op, n->dtype, &n->shape, n->n_in, n->in, &n->a, n->name);
    if (id < 0) goto fail;
    g->nodes[id].index = n->index;
  }
  for (int i = 0; i < src->n_inputs; i++) {
    const kiln_graph_io *io = &src->inputs[i];
    if (kiln_ir_add_input_io(g, io->node, io->name, io->dim_names,
                             src->nodes[io->node].shape.rank) < 0)
      goto fail;
  }
  for (int i = 0; i < src->n_outputs; i++)
    if (kiln_ir_add_output(g, src->outputs[i].node, src->outputs[i].name) < 0) goto fail;
  g->diag = src->diag;
  return g;
fail:
  kiln_ir_graph_destroy(g);
  return NULL;
}

const kiln_const *kiln_ir_const_of(const kiln_graph *g, int32_t v) {
  if (v < 0 || v >= g->n_nodes || g->nodes[v].op != KILN_OP_constant) return NULL;
  return &g->consts[g->nodes[v].index];
}

void kiln_ir_count_uses(const kiln_graph *g, int32_t *uses) {
  memset(uses, 0, sizeof(int32_t) * (size_t)g->n_nodes);
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < g->nodes[i].n_in; j++) uses[g->nodes[i].in[j]]++;
  for (int i = 0; i < g->n_outputs; i++) uses[g->outputs[i].node]++;
}

/* ------------------------------------------------------------------ kernel program container */
kiln_kprogram *kiln_ir_kprogram_create(const kiln_allocator *a) {
  if (!a) a = &default_allocator;
  kiln_arena *ar = kiln_arena_create(a);
  if (!ar) return NULL;
  kiln_kprogram *p = kiln_arena_alloc(ar, sizeof *p);
  if (!p) {
    kiln_arena_destroy(ar);
    return NULL;
  }
  p->alloc = a;
  p->arena = ar;
  return p;
}

void kiln_ir_kprogram_destroy(kiln_kprogram *p) {
  if (p) kiln_arena_destroy(p->arena); /* p itself lives in its arena */
}
