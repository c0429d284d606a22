/* onnx_util.c - helpers the importers share: error messages that name the node, attribute
 * access, and values needed at import time (shapes, axes, pads), folded to constants
 * through the driver's fold callback. */
#include "onnx_impl.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

kiln_status fe_fail(fe_ctx *c, const fe_node *n, kiln_status st, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kiln_diag_set(c->d, st, "%s: node \"%s\" (%s): %s", c->file, n->name, n->p->op_type, msg);
}

const Onnx__AttributeProto *fe_attr(const fe_node *n, const char *name) {
  for (size_t i = 0; i < n->p->n_attribute; i++)
    if (n->p->attribute[i]->name && !strcmp(n->p->attribute[i]->name, name))
      return n->p->attribute[i];
  return NULL;
}

/* True when attribute a is of type t (its field present, its declared type t or unset);
 * otherwise records it in n->bad_attr, so that a wrongly typed attribute is an error
 * rather than silently the default. */
static bool attr_is(const fe_node *n, const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t,
                    bool present) {
  bool ok = present && (!a->has_type || a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED ||
                        a->type == t);
  if (!ok && n->bad_attr && !*n->bad_attr) *n->bad_attr = a;
  return ok;
}

int64_t fe_attr_int(const fe_node *n, const char *name, int64_t def) {
  const Onnx__AttributeProto *a = fe_attr(n, name);
  return a && attr_is(n, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, a->has_i) ? a->i : def;
}

float fe_attr_float(const fe_node *n, const char *name, float def) {
  const Onnx__AttributeProto *a = fe_attr(n, name);
  return a && attr_is(n, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, a->has_f) ? a->f : def;
}

const char *fe_attr_str(fe_ctx *c, const fe_node *n, const char *name, const char *def) {
  const Onnx__AttributeProto *a = fe_attr(n, name);
  if (!a || !attr_is(n, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, a->has_s)) return def;
  char *s = kiln_arena_alloc(c->g->arena, a->s.len + 1);
  if (!s) return def;
  memcpy(s, a->s.data, a->s.len);
  s[a->s.len] = 0;
  return s;
}

int fe_attr_ints(fe_ctx *c, const fe_node *n, const char *name, int64_t *out, int max,
                 kiln_status *st) {
  const Onnx__AttributeProto *a = fe_attr(n, name);
  if (!a) return -1;
  if (!attr_is(n, a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS,
               a->n_ints > 0 || (a->has_type && a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))) {
    *st = fe_fail(c, n, KILN_ERR_PARSE, "attribute '%s' is not a list of ints", name);
    return -1;
  }
  if (a->n_ints > (size_t)max) {
    *st = fe_fail(c, n, KILN_ERR_UNSUPPORTED, "attribute %s has %zu entries (at most %d)", name,
                  a->n_ints, max);
    return -1;
  }
  for (size_t i = 0; i < a->n_ints; i++) out[i] = a->ints[i];
  return (int)a->n_ints;
}

int32_t fe_in(const fe_node *n, int i) { return i < n->n_in ? n->in[i] : -1; }

const kiln_node *fe_nd(const fe_ctx *c, int32_t v) { return &c->g->nodes[v]; }

kiln_status fe_need(fe_ctx *c, const fe_node *n, int i) {
  if (fe_in(n, i) >= 0) return KILN_OK;
  return fe_fail(c, n, KILN_ERR_PARSE, "required input %d is missing", i);
}

kiln_status fe_need_inputs(fe_ctx *c, const fe_node *n, int k) {
  for (int i = 0; i < k; i++) {
    kiln_status st = fe_need(c, n, i);
    if (st != KILN_OK) return st;
  }
  return KILN_OK;
}

/* True when v depends on a graph input (then no import-time value exists); the names of
 * those inputs go to names ("'a', 'b'") so that a caller can tell which inputs it would
 * have to know at compile time. */
static bool depends_on_input(fe_ctx *c, int32_t v, char *names, size_t cap) {
  kiln_graph *g = c->g;
  uint8_t *seen = kiln_ir_malloc(g->alloc, (size_t)g->n_nodes);
  int32_t *stack = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)g->n_nodes);
  bool dep = false;
  size_t len = 0;
  names[0] = 0;
  if (!seen || !stack) goto done; /* let the fold callback report it */
  memset(seen, 0, (size_t)g->n_nodes);
  int32_t sp = 0;
  stack[sp++] = v;
  seen[v] = 1;
  while (sp > 0) {
    const kiln_node *nd = &g->nodes[stack[--sp]];
    if (nd->op == KILN_OP_input) {
      dep = true;
      if (len < cap) len += (size_t)snprintf(names + len, cap - len, "%s'%s'", len ? ", " : "", nd->name);
    }
    for (int32_t j = 0; j < nd->n_in; j++)
      if (!seen[nd->in[j]]) {
        seen[nd->in[j]] = 1;
        stack[sp++] = nd->in[j];
      }
  }
done:
  kiln_ir_free(g->alloc, seen);
  kiln_ir_free(g->alloc, stack);
  return dep;
}

kiln_status fe_fold(fe_ctx *c, const fe_node *n, int32_t v, int32_t *out) {
  if (v < 0) return fe_fail(c, n, KILN_ERR_PARSE, "a required input is missing");
  if (kiln_ir_const_of(c->g, v)) {
    *out = v;
    return KILN_OK;
  }
  char names[512];
  if (depends_on_input(c, v, names, sizeof names))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED,
                   "data-dependent shape for %s: an input it needs at compile time depends on "
                   "graph input %s", n->name, names);
  if (!c->o || !c->o->fold)
    return fe_fail(c, n, KILN_ERR_INTERNAL, "needs a computed value but no fold callback was given");
  kiln_diag fd = {0};
  int32_t nv = -1;
  kiln_status st = c->o->fold(c->o->fold_user, c->g, v, &nv, &fd);
  if (st != KILN_OK || !kiln_ir_const_of(c->g, nv))
    return fe_fail(c, n, st != KILN_OK ? st : KILN_ERR_INTERNAL,
                   "data-dependent shape for %s: folding failed: %s", n->name, fd.msg);
  *out = nv;
  return KILN_OK;
}

kiln_status fe_value(fe_ctx *c, const fe_node *n, int32_t v, const kiln_const **out) {
  int32_t k;
  kiln_status st = fe_fold(c, n, v, &k);
  if (st == KILN_OK) *out = kiln_ir_const_of(c->g, k);
  return st;
}

kiln_status fe_value_ints(fe_ctx *c, const fe_node *n, int i, int64_t *vals, int max, int *count) {
  const kiln_const *k;
  kiln_status st = fe_value(c, n, fe_in(n, i), &k);
  if (st != KILN_OK) return st;
  if (!kiln_dtype_is_int(k->dtype) && k->dtype != KILN_BOOL)
    return fe_fail(c, n, KILN_ERR_SHAPE, "input %d must be an integer tensor, not %s", i,
                   kiln_dtype_name(k->dtype));
  int64_t m = kiln_shape_numel(&k->shape);
  if (k->shape.rank > 1 || m > max)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "input %d has %lld values (at most %d in a 1-D list)",
                   i, (long long)m, max);
  for (int64_t j = 0; j < m; j++) vals[j] = fe_get_i64(k->dtype, k->data, j);
  *count = (int)m;
  return KILN_OK;
}

kiln_status fe_value_scalar(fe_ctx *c, const fe_node *n, int i, double *v) {
  const kiln_const *k;
  kiln_status st = fe_value(c, n, fe_in(n, i), &k);
  if (st != KILN_OK) return st;
  if (kiln_shape_numel(&k->shape) != 1)
    return fe_fail(c, n, KILN_ERR_SHAPE, "input %d must hold one value, not %lld", i,
                   (long long)kiln_shape_numel(&k->shape));
  *v = fe_get_f64(k->dtype, k->data, 0);
  return KILN_OK;
}

double fe_get_f64(kiln_dtype dt, const void *p, int64_t i) {
  switch (dt) {
    case KILN_F32: return ((const float *)p)[i];
    case KILN_F64: return ((const double *)p)[i];
    case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)p)[i]);
    case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return (double)fe_get_i64(dt, p, i);
  }
}

int64_t fe_get_i64(kiln_dtype dt, const void *p, int64_t i) {
  switch (dt) {
    case KILN_I8: return ((const int8_t *)p)[i];
    case KILN_I16: return ((const int16_t *)p)[i];
    case KILN_I32: return ((const int32_t *)p)[i];
    case KILN_I64: return ((const int64_t *)p)[i];
    case KILN_U8:
    case KILN_BOOL: return ((const uint8_t *)p)[i];
    default: {
      double v = fe_get_f64(dt, p, i);
      return isnan(v) ? 0 : (int64_t)v;
    }
  }
}

void fe_set_f64(kiln_dtype dt, void *p, int64_t i, double v) {
  switch (dt) {
    case KILN_F32: ((float *)p)[i] = (float)v; break;
    case KILN_F64: ((double *)p)[i] = v; break;
    case KILN_F16: ((uint16_t *)p)[i] = kiln_f32_to_f16((float)v); break;
    case KILN_BF16: ((uint16_t *)p)[i] = kiln_f32_to_bf16((float)v); break;
    case KILN_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case KILN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KILN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KILN_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case KILN_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KILN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: KILN_ASSERT(0);
  }
}

kiln_status fe_scatter_reduction(fe_ctx *c, const fe_node *n, int *kind) {
  static const char *const kinds[] = {"none", "add", "mul", "max", "min"};
  const char *red = fe_attr_str(c, n, "reduction", "none");
  for (int i = 0; i < 5; i++)
    if (!strcmp(red, kinds[i])) {
      *kind = i;
      return KILN_OK;
    }
  return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "reduction='%s' is not supported", red);
}

kiln_status fe_axis(fe_ctx *c, const fe_node *n, int64_t axis, int32_t rank, int32_t *out) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)axis,
                   rank);
  *out = (int32_t)a;
  return KILN_OK;
}

int32_t fe_scalar_like(fe_ctx *c, const fe_node *n, int32_t v, double x) {
  if (v < 0) return -1;
  return kiln_ir_scalar(c->g, c->g->nodes[v].dtype, x, n->name);
}

int32_t fe_channel_view(fe_ctx *c, const fe_node *n, int32_t v, int32_t rank) {
  if (v < 0) return -1;
  kiln_shape s = {.rank = rank < 2 ? 1 : rank - 1};
  for (int i = 0; i < s.rank; i++) s.dims[i] = 1;
  s.dims[0] = kiln_shape_numel(&c->g->nodes[v].shape);
  return kiln_ir_reshape(c->g, v, &s, n->name);
}

int32_t fe_reduce_mean(fe_ctx *c, const fe_node *n, int32_t x, int32_t n_axes,
                       const int32_t *axes, int keepdims) {
  if (x < 0) return -1;
  const kiln_shape *s = &c->g->nodes[x].shape;
  double count = 1;
  for (int i = 0; i < n_axes; i++) {
    int32_t a = axes[i] < 0 ? axes[i] + s->rank : axes[i];
    if (a >= 0 && a < s->rank) count *= (double)s->dims[a]; /* else the builder refuses it */
  }
  int32_t sum = kiln_ir_reduce(c->g, KILN_OP_reduce_sum, x, n_axes, axes, keepdims, n->name);
  return kiln_ir_binary(c->g, KILN_OP_div, sum, fe_scalar_like(c, n, x, count), n->name);
}
