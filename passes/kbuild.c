/* kbuild.c - the kernel expression builder used by lowering: appends kx nodes with
 * hash-consing, and keeps index arithmetic small by folding it against the value range
 * of every i64 node (loop variables range over their extents). Composed movement ops
 * produce chains like ((i*12 + j*4 + k) / 4) mod 3; the ranges are what turn the
 * clamps, masks and wraparounds that cannot fire back into plain variables.
 */
#include "passes-impl.h"

#include <math.h>
#include <string.h>

#define UNBOUNDED_LO INT64_MIN
#define UNBOUNDED_HI INT64_MAX

void kiln_pass_kb_free(kiln_pass_kb *b) {
  kiln_ir_free(b->alloc, b->kx);
  kiln_ir_free(b->alloc, b->lo);
  kiln_ir_free(b->alloc, b->hi);
  kiln_ir_free(b->alloc, b->table);
  kiln_ir_free(b->alloc, b->extent);
  const kiln_allocator *a = b->alloc;
  memset(b, 0, sizeof *b);
  b->alloc = a;
}

void kiln_pass_kb_reset(kiln_pass_kb *b, const kiln_shape *out) {
  b->n_kx = 0;
  b->n_vars = 0;
  b->out_rank = out->rank;
  for (int32_t i = 0; i < b->cap_table; i++) b->table[i] = -1;
  kiln_pass_kb_new_vars(b, out->rank, out->dims);
}

static bool grow(kiln_pass_kb *b, void **p, size_t elem, int32_t cap) {
  void *q = kiln_ir_realloc(b->alloc, *p, elem * (size_t)cap);
  if (!q) {
    b->oom = true;
    return false;
  }
  *p = q;
  return true;
}

int32_t kiln_pass_kb_new_vars(kiln_pass_kb *b, int32_t n, const int64_t *extents) {
  if (b->n_vars + n > b->cap_vars) {
    int32_t cap = (b->n_vars + n) * 2 + 8;
    if (!grow(b, (void **)&b->extent, sizeof(int64_t), cap)) return 0;
    b->cap_vars = cap;
  }
  int32_t first = b->n_vars;
  for (int32_t i = 0; i < n; i++) b->extent[b->n_vars++] = extents[i];
  return first;
}

static uint64_t kx_hash(const kiln_kx *e) {
  uint64_t h = 1469598103934665603ull;
  int64_t f;
  memcpy(&f, &e->f, sizeof f);
  const int64_t parts[] = {e->kind, e->dtype, e->op, e->kind_attr, e->a[0], e->a[1], e->a[2],
                           e->buf, e->var, e->n_vars, f, e->i};
  for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) h = (h ^ (uint64_t)parts[k]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static bool kx_equal(const kiln_kx *x, const kiln_kx *y) {
  return x->kind == y->kind && x->dtype == y->dtype && x->op == y->op &&
         x->kind_attr == y->kind_attr && x->a[0] == y->a[0] && x->a[1] == y->a[1] &&
         x->a[2] == y->a[2] && x->buf == y->buf && x->var == y->var && x->n_vars == y->n_vars &&
         memcmp(&x->f, &y->f, sizeof x->f) == 0 && x->i == y->i;
}

static bool rehash(kiln_pass_kb *b) {
  int32_t cap = b->cap_table ? b->cap_table * 2 : 256;
  int32_t *t = kiln_ir_malloc(b->alloc, sizeof(int32_t) * (size_t)cap);
  if (!t) return b->oom = true, false;
  for (int32_t i = 0; i < cap; i++) t[i] = -1;
  for (int32_t id = 0; id < b->n_kx; id++) {
    uint32_t s = (uint32_t)kx_hash(&b->kx[id]) & (uint32_t)(cap - 1);
    while (t[s] >= 0) s = (s + 1) & (uint32_t)(cap - 1);
    t[s] = id;
  }
  kiln_ir_free(b->alloc, b->table);
  b->table = t;
  b->cap_table = cap;
  return true;
}

/* Appends e (or finds its twin) with value range [lo, hi]. */
static int32_t add(kiln_pass_kb *b, const kiln_kx *e, int64_t lo, int64_t hi) {
  if (b->oom) return 0;
  if (2 * (b->n_kx + 1) > b->cap_table && !rehash(b)) return 0;
  uint32_t s = (uint32_t)kx_hash(e) & (uint32_t)(b->cap_table - 1);
  for (; b->table[s] >= 0; s = (s + 1) & (uint32_t)(b->cap_table - 1))
    if (kx_equal(&b->kx[b->table[s]], e)) return b->table[s];
  if (b->n_kx == b->cap_kx) {
    int32_t cap = b->cap_kx ? b->cap_kx * 2 : 64;
    if (!grow(b, (void **)&b->kx, sizeof(kiln_kx), cap) ||
        !grow(b, (void **)&b->lo, sizeof(int64_t), cap) || !grow(b, (void **)&b->hi, sizeof(int64_t), cap))
      return 0;
    b->cap_kx = cap;
  }
  int32_t id = b->n_kx++;
  b->kx[id] = *e;
  b->lo[id] = lo;
  b->hi[id] = hi;
  b->table[s] = id;
  return id;
}

static kiln_kx blank(kiln_kx_kind kind, kiln_dtype dt) {
  kiln_kx e;
  memset(&e, 0, sizeof e);
  e.kind = kind;
  e.dtype = dt;
  e.a[0] = e.a[1] = e.a[2] = -1;
  e.buf = -1;
  return e;
}

int32_t kiln_pass_kb_var(kiln_pass_kb *b, int32_t var) {
  kiln_kx e = blank(KILN_KX_VAR, KILN_I64);
  e.var = var;
  int64_t ext = var < b->n_vars ? b->extent[var] : 1;
  return add(b, &e, 0, ext > 0 ? ext - 1 : 0);
}

int32_t kiln_pass_kb_int(kiln_pass_kb *b, int64_t v) {
  kiln_kx e = blank(KILN_KX_CONST, KILN_I64);
  e.i = v;
  return add(b, &e, v, v);
}

int32_t kiln_pass_kb_bool(kiln_pass_kb *b, bool v) {
  kiln_kx e = blank(KILN_KX_CONST, KILN_BOOL);
  e.i = v;
  return add(b, &e, v, v);
}

int32_t kiln_pass_kb_const(kiln_pass_kb *b, kiln_dtype dt, double v) {
  if (dt == KILN_I64) return kiln_pass_kb_int(b, (int64_t)v);
  if (dt == KILN_BOOL) return kiln_pass_kb_bool(b, v != 0);
  kiln_kx e = blank(KILN_KX_CONST, dt);
  if (kiln_dtype_is_float(dt)) e.f = v;
  else e.i = (int64_t)v;
  return add(b, &e, UNBOUNDED_LO, UNBOUNDED_HI);
}

static bool is_const(const kiln_pass_kb *b, int32_t x) {
  return !b->oom && b->lo[x] == b->hi[x] && b->lo[x] != UNBOUNDED_LO &&
         (b->kx[x].dtype == KILN_I64 || b->kx[x].dtype == KILN_BOOL);
}

/* Saturating interval arithmetic: a saturated end means "unbounded", which only widens. */
static int64_t sadd(int64_t x, int64_t y) {
  int64_t r;
  if (x == UNBOUNDED_LO || y == UNBOUNDED_LO) return UNBOUNDED_LO;
  if (x == UNBOUNDED_HI || y == UNBOUNDED_HI) return UNBOUNDED_HI;
  if (__builtin_add_overflow(x, y, &r)) return x > 0 ? UNBOUNDED_HI : UNBOUNDED_LO;
  return r;
}
static int64_t smul(int64_t x, int64_t y) {
  int64_t r;
  if (x == 0 || y == 0) return 0;
  bool unb = x == UNBOUNDED_LO || x == UNBOUNDED_HI || y == UNBOUNDED_LO || y == UNBOUNDED_HI;
  if (unb || __builtin_mul_overflow(x, y, &r)) return (x > 0) == (y > 0) ? UNBOUNDED_HI : UNBOUNDED_LO;
  return r;
}
static int64_t sneg(int64_t x) {
  return x == UNBOUNDED_LO ? UNBOUNDED_HI : x == UNBOUNDED_HI ? UNBOUNDED_LO : -x;
}
static int64_t min2(int64_t x, int64_t y) { return x < y ? x : y; }
static int64_t max2(int64_t x, int64_t y) { return x > y ? x : y; }

static int32_t alu_raw(kiln_pass_kb *b, kiln_op op, kiln_dtype dt, int32_t kind, int32_t x,
                       int32_t y, int32_t z, int64_t lo, int64_t hi) {
  kiln_kx e = blank(KILN_KX_ALU, dt);
  e.op = op;
  e.kind_attr = kind;
  e.a[0] = x;
  e.a[1] = y;
  e.a[2] = z;
  return add(b, &e, lo, hi);
}

/* A comparison whose answer the operands' ranges may already give (known: 1 true, 0
 * false, -1 unknown). */
static int32_t compare(kiln_pass_kb *b, kiln_op op, int32_t x, int32_t y, int known) {
  if (known >= 0) return kiln_pass_kb_bool(b, known);
  return alu_raw(b, op, KILN_BOOL, 0, x, y, -1, 0, 1);
}

/* Flattens a tree of i64 adds into its terms (false when there are too many). */
static bool add_terms(const kiln_pass_kb *b, int32_t x, int32_t *terms, int *n, int cap) {
  const kiln_kx *e = &b->kx[x];
  if (e->kind == KILN_KX_ALU && e->op == KILN_OP_add && e->dtype == KILN_I64)
    return add_terms(b, e->a[0], terms, n, cap) && add_terms(b, e->a[1], terms, n, cap);
  if (*n == cap) return false;
  terms[(*n)++] = x;
  return true;
}

/* True when term t is a multiple of c by construction: k*c, or a*(k*c). */
static bool is_multiple(const kiln_pass_kb *b, int32_t t, int64_t c) {
  const kiln_kx *e = &b->kx[t];
  if (is_const(b, t)) return b->lo[t] % c == 0;
  return e->kind == KILN_KX_ALU && e->op == KILN_OP_mul && e->dtype == KILN_I64 && is_const(b, e->a[1]) &&
         b->lo[e->a[1]] % c == 0;
}

static int32_t exact_quotient(kiln_pass_kb *b, int32_t t, int64_t c) {
  if (is_const(b, t)) return kiln_pass_kb_int(b, b->lo[t] / c);
  const kiln_kx *e = &b->kx[t];
  return kiln_pass_kb_ix(b, KILN_OP_mul, e->a[0], kiln_pass_kb_int(b, b->lo[e->a[1]] / c));
}

/* x / c and x mod c for x = (multiples of c) + r with 0 <= r < c and x >= 0: the quotient
 * is the sum of the multiples over c and the remainder is r. Undoes linearize-then-split,
 * which composed reshapes produce. Returns false (building nothing) otherwise. */
static bool split_by(kiln_pass_kb *b, int32_t x, int64_t c, int32_t *quot, int32_t *rem) {
  int32_t terms[16];
  int n = 0, n_mult = 0;
  if (b->lo[x] < 0 || !add_terms(b, x, terms, &n, 16)) return false;
  int64_t rlo = 0, rhi = 0;
  for (int i = 0; i < n; i++) {
    if (is_multiple(b, terms[i], c)) n_mult++;
    else rlo = sadd(rlo, b->lo[terms[i]]), rhi = sadd(rhi, b->hi[terms[i]]);
  }
  if (n_mult == 0 || rlo < 0 || rhi >= c) return false;
  int32_t q = kiln_pass_kb_int(b, 0), r = kiln_pass_kb_int(b, 0);
  for (int i = 0; i < n; i++) {
    if (is_multiple(b, terms[i], c)) q = kiln_pass_kb_ix(b, KILN_OP_add, q, exact_quotient(b, terms[i], c));
    else r = kiln_pass_kb_ix(b, KILN_OP_add, r, terms[i]);
  }
  *quot = q;
  *rem = r;
  return true;
}

int32_t kiln_pass_kb_ix(kiln_pass_kb *b, kiln_op op, int32_t x, int32_t y) {
  if (b->oom) return 0;
  int64_t xl = b->lo[x], xh = b->hi[x], yl = b->lo[y], yh = b->hi[y];
  bool cx = is_const(b, x), cy = is_const(b, y);
  switch (op) {
  case KILN_OP_add:
    if (cx && xl == 0) return y;
    if (cy && yl == 0) return x;
    if (cx && cy) return kiln_pass_kb_int(b, xl + yl);
    if (cx) { int32_t t = x; x = y; y = t; } /* constants on the right: x + c */
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, sadd(b->lo[x], b->lo[y]), sadd(b->hi[x], b->hi[y]));
  case KILN_OP_sub:
    if (cy && yl == 0) return x;
    if (cx && cy) return kiln_pass_kb_int(b, xl - yl);
    if (x == y) return kiln_pass_kb_int(b, 0);
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, sadd(xl, sneg(yh)), sadd(xh, sneg(yl)));
  case KILN_OP_mul: {
    if ((cx && xl == 0) || (cy && yl == 0)) return kiln_pass_kb_int(b, 0);
    if (cx && xl == 1) return y;
    if (cy && yl == 1) return x;
    if (cx && cy) return kiln_pass_kb_int(b, xl * yl);
    if (cx) { int32_t t = x; x = y; y = t; xl = b->lo[x]; xh = b->hi[x]; yl = b->lo[y]; yh = b->hi[y]; }
    int64_t c[4] = {smul(xl, yl), smul(xl, yh), smul(xh, yl), smul(xh, yh)};
    int64_t lo = min2(min2(c[0], c[1]), min2(c[2], c[3])), hi = max2(max2(c[0], c[1]), max2(c[2], c[3]));
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, lo, hi);
  }
  case KILN_OP_div:
    KILN_ASSERT(cy && yl > 0);
    if (yl == 1) return x;
    if (cx) return kiln_pass_kb_int(b, xl / yl);
    if (xl >= 0 && xh < yl) return kiln_pass_kb_int(b, 0);
    {
      int32_t q, r;
      if (split_by(b, x, yl, &q, &r)) return q;
    }
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, xl >= 0 ? xl / yl : UNBOUNDED_LO,
                   xl >= 0 ? (xh == UNBOUNDED_HI ? xh : xh / yl) : UNBOUNDED_HI);
  case KILN_OP_mod:
    KILN_ASSERT(cy && yl > 0);
    if (yl == 1) return kiln_pass_kb_int(b, 0);
    if (cx) return kiln_pass_kb_int(b, xl % yl);
    if (xl >= 0 && xh < yl) return x;
    {
      int32_t q, r;
      if (split_by(b, x, yl, &q, &r)) return r;
    }
    return alu_raw(b, op, KILN_I64, 1, x, y, -1, 0, yl - 1);
  case KILN_OP_min:
    if (xh <= yl) return x;
    if (yh <= xl) return y;
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, min2(xl, yl), min2(xh, yh));
  case KILN_OP_max:
    if (xl >= yh) return x;
    if (yl >= xh) return y;
    return alu_raw(b, op, KILN_I64, 0, x, y, -1, max2(xl, yl), max2(xh, yh));
  case KILN_OP_and:
    if (cx) return xl ? y : x;
    if (cy) return yl ? x : y;
    if (x == y) return x;
    return alu_raw(b, op, KILN_BOOL, 0, x, y, -1, 0, 1);
  case KILN_OP_or:
    if (cx) return xl ? x : y;
    if (cy) return yl ? y : x;
    if (x == y) return x;
    return alu_raw(b, op, KILN_BOOL, 0, x, y, -1, 0, 1);
  case KILN_OP_lt: return compare(b, op, x, y, xh < yl ? 1 : xl >= yh ? 0 : -1);
  case KILN_OP_le: return compare(b, op, x, y, xh <= yl ? 1 : xl > yh ? 0 : -1);
  case KILN_OP_gt: return compare(b, op, x, y, xl > yh ? 1 : xh <= yl ? 0 : -1);
  case KILN_OP_ge: return compare(b, op, x, y, xl >= yh ? 1 : xh < yl ? 0 : -1);
  case KILN_OP_eq: return compare(b, op, x, y, (xl == xh && yl == yh && xl == yl) ? 1 : (xh < yl || xl > yh) ? 0 : -1);
  case KILN_OP_ne: return compare(b, op, x, y, (xl == xh && yl == yh && xl == yl) ? 0 : (xh < yl || xl > yh) ? 1 : -1);
  /* not index arithmetic */
  KILN_OPS_UNARY(KILN_OP_CASE)
  case KILN_OP_pow: case KILN_OP_xor: case KILN_OP_select: case KILN_OP_cast:
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not an index op");
}

int32_t kiln_pass_kb_select(kiln_pass_kb *b, int32_t c, int32_t x, int32_t y) {
  if (b->oom) return 0;
  if (is_const(b, c)) return b->lo[c] ? x : y;
  if (x == y) return x;
  kiln_dtype dt = b->kx[x].dtype;
  bool ix = dt == KILN_I64 || dt == KILN_BOOL;
  return alu_raw(b, KILN_OP_select, dt, 0, c, x, y, ix ? min2(b->lo[x], b->lo[y]) : UNBOUNDED_LO,
                 ix ? max2(b->hi[x], b->hi[y]) : UNBOUNDED_HI);
}

int32_t kiln_pass_kb_clamp(kiln_pass_kb *b, int32_t x, int64_t lo, int64_t hi) {
  if (hi < lo) hi = lo; /* an empty range: nothing reads the value (zero-size tensor) */
  x = kiln_pass_kb_ix(b, KILN_OP_max, x, kiln_pass_kb_int(b, lo));
  return kiln_pass_kb_ix(b, KILN_OP_min, x, kiln_pass_kb_int(b, hi));
}

int32_t kiln_pass_kb_alu(kiln_pass_kb *b, kiln_op op, kiln_dtype dt, int32_t kind, int32_t n,
                         const int32_t *a) {
  bool boolean = dt == KILN_BOOL;
  return alu_raw(b, op, dt, kind, n > 0 ? a[0] : -1, n > 1 ? a[1] : -1, n > 2 ? a[2] : -1,
                 boolean ? 0 : UNBOUNDED_LO, boolean ? 1 : UNBOUNDED_HI);
}

int32_t kiln_pass_kb_cast(kiln_pass_kb *b, int32_t x, kiln_dtype to) {
  if (b->oom) return 0;
  kiln_dtype from = b->kx[x].dtype;
  if (from == to) return x;
  /* bool -> i64 keeps its 0/1 range; i32 -> i64 is exact */
  bool keep = to == KILN_I64 && (from == KILN_BOOL);
  return alu_raw(b, KILN_OP_cast, to, 0, x, -1, -1, keep ? 0 : UNBOUNDED_LO, keep ? 1 : UNBOUNDED_HI);
}

int32_t kiln_pass_kb_load(kiln_pass_kb *b, int32_t buf, kiln_dtype dt, int32_t off, int32_t mask,
                          double fill) {
  if (b->oom) return 0;
  if (mask >= 0 && is_const(b, mask)) {
    if (!b->lo[mask]) return kiln_pass_kb_const(b, dt, fill);
    mask = -1;
  }
  kiln_kx e = blank(KILN_KX_LOAD, dt);
  e.buf = buf;
  e.a[0] = off;
  e.a[1] = mask;
  if (mask >= 0) {
    if (kiln_dtype_is_float(dt)) e.f = fill;
    else e.i = dt == KILN_BOOL ? fill != 0 : (int64_t)fill;
  }
  return add(b, &e, dt == KILN_BOOL ? 0 : UNBOUNDED_LO, dt == KILN_BOOL ? 1 : UNBOUNDED_HI);
}

int32_t kiln_pass_kb_reduce(kiln_pass_kb *b, kiln_op op, kiln_dtype dt, int32_t kind, int32_t var,
                            int32_t n_vars, int32_t body) {
  kiln_kx e = blank(KILN_KX_REDUCE, dt);
  e.op = op;
  e.kind_attr = kind;
  e.var = var;
  e.n_vars = n_vars;
  e.a[0] = body;
  bool arg = kiln_op_has(op, KILN_OPF_INDEX); /* argmax/argmin */
  int64_t ext = arg && var < b->n_vars ? b->extent[var] : 0;
  return add(b, &e, arg ? 0 : UNBOUNDED_LO, arg ? (ext > 0 ? ext - 1 : 0) : UNBOUNDED_HI);
}

int32_t kiln_pass_kb_check(kiln_pass_kb *b, int32_t cond, int32_t value, kiln_op op, int32_t node,
                           int64_t dim) {
  if (b->oom) return 0;
  if (is_const(b, cond) && b->lo[cond]) return value;
  kiln_kx e = blank(KILN_KX_CHECK, b->kx[value].dtype);
  e.a[0] = cond;
  e.a[1] = value;
  e.op = op;
  e.var = node;
  e.i = dim;
  return add(b, &e, b->lo[value], b->hi[value]);
}

int32_t kiln_pass_kb_linearize(kiln_pass_kb *b, const int32_t *idx, const kiln_shape *s) {
  int64_t strides[KILN_MAX_RANK];
  kiln_shape_strides(s, strides);
  int32_t off = kiln_pass_kb_int(b, 0);
  for (int32_t d = 0; d < s->rank; d++) {
    if (s->dims[d] == 1) continue; /* the index is 0 wherever the tensor is read */
    off = kiln_pass_kb_ix(b, KILN_OP_add, off,
                          kiln_pass_kb_ix(b, KILN_OP_mul, idx[d], kiln_pass_kb_int(b, strides[d])));
  }
  return off;
}

int32_t kiln_pass_kb_compact(kiln_pass_kb *b, int32_t root) {
  if (b->oom || b->n_kx == 0) return root;
  /* Operands precede their users, so one backward sweep marks everything root reaches;
   * lo[] doubles as the mark and hi[] as the new id (ranges are not needed any more). */
  for (int32_t i = 0; i < b->n_kx; i++) b->lo[i] = 0;
  b->lo[root] = 1;
  for (int32_t i = root; i >= 0; i--) {
    if (!b->lo[i]) continue;
    for (int j = 0; j < 3; j++)
      if (b->kx[i].a[j] >= 0) b->lo[b->kx[i].a[j]] = 1;
  }
  int32_t n = 0;
  for (int32_t i = 0; i < b->n_kx; i++) {
    if (!b->lo[i]) continue;
    kiln_kx e = b->kx[i];
    for (int j = 0; j < 3; j++)
      if (e.a[j] >= 0) e.a[j] = (int32_t)b->hi[e.a[j]];
    b->hi[i] = n;
    b->kx[n++] = e;
  }
  int32_t new_root = (int32_t)b->hi[root];
  b->n_kx = n;
  /* Drop the loop variables of reductions that folded away (their ranges are whole), so
   * every variable past the output's belongs to a REDUCE that is still there. lo[] is
   * reused as the variable map (n_vars <= n_kx is not guaranteed: size it separately). */
  int32_t out_rank = b->out_rank, nv = 0;
  int32_t *map = kiln_ir_malloc(b->alloc, sizeof(int32_t) * (size_t)(b->n_vars + 1));
  if (!map) return b->oom = true, new_root;
  for (int32_t v = 0; v < b->n_vars; v++) map[v] = v < out_rank ? v : -1;
  for (int32_t i = 0; i < n; i++)
    if (b->kx[i].kind == KILN_KX_REDUCE)
      for (int32_t v = b->kx[i].var; v < b->kx[i].var + b->kx[i].n_vars; v++) map[v] = v;
  for (int32_t v = 0; v < b->n_vars; v++)
    if (map[v] >= 0) {
      b->extent[nv] = b->extent[v];
      map[v] = nv++;
    }
  for (int32_t i = 0; i < n; i++)
    if (b->kx[i].kind == KILN_KX_REDUCE || b->kx[i].kind == KILN_KX_VAR) b->kx[i].var = map[b->kx[i].var];
  b->n_vars = nv;
  kiln_ir_free(b->alloc, map);
  for (int32_t i = 0; i < b->cap_table; i++) b->table[i] = -1; /* the builder is done */
  return new_root;
}
