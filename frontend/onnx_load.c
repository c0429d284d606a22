/* onnx_load.c - loading an ONNX model into a Kiln graph: parse the protobuf, check the
 * opset and that every node has an importer (one error listing all that do not) and input
 * and output counts its schema allows (onnx_arity.inc), turn initializers into
 * constants and the other graph inputs into inputs (binding symbolic dims), run the
 * importers in order, add the outputs, and drop what only import-time folding needed. */
#include "onnx_impl.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Marks a name bound to an ONNX output that its importer does not compute. */
#define FE_UNPRODUCED (-2)

/* ------------------------------------------------------------------ name map */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static bool map_grow(fe_map *m) {
  size_t cap = m->cap ? m->cap * 2 : 256;
  const char **keys = kiln_ir_malloc(m->alloc, cap * sizeof *keys);
  int32_t *vals = kiln_ir_malloc(m->alloc, cap * sizeof *vals);
  if (!keys || !vals) {
    kiln_ir_free(m->alloc, keys);
    kiln_ir_free(m->alloc, vals);
    return false;
  }
  memset(keys, 0, cap * sizeof *keys);
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i]) continue;
    size_t j = hash_str(m->keys[i]) & (cap - 1);
    while (keys[j]) j = (j + 1) & (cap - 1);
    keys[j] = m->keys[i];
    vals[j] = m->vals[i];
  }
  kiln_ir_free(m->alloc, m->keys);
  kiln_ir_free(m->alloc, m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
  return true;
}

/* Binds (or rebinds: later definitions win, as in ONNX's SSA it never happens) key. */
static bool map_put(fe_map *m, const char *key, int32_t val) {
  if ((m->n + 1) * 2 > m->cap && !map_grow(m)) return false;
  size_t j = hash_str(key) & (m->cap - 1);
  while (m->keys[j] && strcmp(m->keys[j], key)) j = (j + 1) & (m->cap - 1);
  if (!m->keys[j]) m->n++;
  m->keys[j] = key;
  m->vals[j] = val;
  return true;
}

static bool map_get(const fe_map *m, const char *key, int32_t *val) {
  if (!m->cap) return false;
  size_t j = hash_str(key) & (m->cap - 1);
  while (m->keys[j]) {
    if (!strcmp(m->keys[j], key)) {
      *val = m->vals[j];
      return true;
    }
    j = (j + 1) & (m->cap - 1);
  }
  return false;
}

static void map_free(fe_map *m) {
  kiln_ir_free(m->alloc, m->keys);
  kiln_ir_free(m->alloc, m->vals);
}

/* ------------------------------------------------------------------ checks */
/* Input/output counts of one schema version of an op (generated from onnx's schemas). */
typedef struct fe_arity {
  const char *op_type;
  int32_t since_version, min_in, max_in, min_out, max_out;
  uint32_t required; /* bit i: input i is a required (Single) formal parameter */
} fe_arity;

#include "onnx_arity.inc"

/* The schema version of op_type in force at opset: the row with the largest
 * since_version <= opset. A model that uses an op before it exists in its declared opset
 * gets the op's first version: importers accept such models, and the counts of the first
 * version still bound what they read. NULL when the table does not know op_type (an
 * importer added without rerunning scripts/gen_onnx_arity.py). */
static const fe_arity *find_arity(const char *op_type, int64_t opset) {
  size_t lo = 0, hi = sizeof fe_arity_table / sizeof fe_arity_table[0];
  while (lo < hi) { /* first row of op_type: rows are sorted by op type (strcmp order) */
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(fe_arity_table[mid].op_type, op_type) < 0) lo = mid + 1;
    else hi = mid;
  }
  const fe_arity *best = NULL;
  for (size_t i = lo; i < sizeof fe_arity_table / sizeof fe_arity_table[0] &&
                      !strcmp(fe_arity_table[i].op_type, op_type); i++)
    if (!best || fe_arity_table[i].since_version <= opset) best = &fe_arity_table[i];
  return best;
}

/* "2", "1 to 3" or "at least 1" into buf. */
static const char *count_range(char *buf, size_t cap, int32_t lo, int32_t hi) {
  if (hi == INT32_MAX) snprintf(buf, cap, "at least %d", (int)lo);
  else if (lo == hi) snprintf(buf, cap, "%d", (int)lo);
  else snprintf(buf, cap, "%d to %d", (int)lo, (int)hi);
  return buf;
}

/* Refuses a node whose input or output count its op's schema (at the model's opset) does
 * not allow. Trailing empty names are optional inputs/outputs left out and do not count;
 * an empty name before a named one is an omitted optional input, which is refused only
 * where the schema requires that input. */
static kiln_status check_arity(fe_ctx *c, const fe_node *n) {
  const Onnx__NodeProto *p = n->p;
  const fe_arity *a = find_arity(p->op_type, c->opset);
  if (!a) return KILN_OK;
  size_t n_in = p->n_input, n_out = p->n_output;
  while (n_in > 0 && (!p->input[n_in - 1] || !*p->input[n_in - 1])) n_in--;
  while (n_out > 0 && (!p->output[n_out - 1] || !*p->output[n_out - 1])) n_out--;
  char range[48];
  if (n_in < (size_t)a->min_in || n_in > (size_t)a->max_in)
    return fe_fail(c, n, KILN_ERR_PARSE, "%zu input%s, %s takes %s (opset %lld)", n_in,
                   n_in == 1 ? "" : "s", p->op_type,
                   count_range(range, sizeof range, a->min_in, a->max_in), (long long)c->opset);
  if (n_out < (size_t)a->min_out || n_out > (size_t)a->max_out)
    return fe_fail(c, n, KILN_ERR_PARSE, "%zu output%s, %s produces %s (opset %lld)", n_out,
                   n_out == 1 ? "" : "s", p->op_type,
                   count_range(range, sizeof range, a->min_out, a->max_out), (long long)c->opset);
  for (size_t i = 0; i < n_in && i < 32; i++)
    if ((a->required >> i & 1u) && (!p->input[i] || !*p->input[i]))
      return fe_fail(c, n, KILN_ERR_PARSE, "input %zu is empty, but %s requires it (opset %lld)",
                     i, p->op_type, (long long)c->opset);
  return KILN_OK;
}

static bool default_domain(const char *dom) {
  return !dom || !*dom || !strcmp(dom, "ai.onnx");
}

/* "<OpType>_<index>" for nameless nodes, in the graph arena. */
static const char *node_name(kiln_graph *g, const Onnx__NodeProto *p, size_t i) {
  if (p->name && *p->name) return p->name;
  char buf[256];
  snprintf(buf, sizeof buf, "%s_%zu", p->op_type ? p->op_type : "node", i);
  return kiln_arena_strdup(g->arena, buf);
}

static bool node_supported(const Onnx__NodeProto *p) {
  return p->op_type && default_domain(p->domain) && fe_find_importer(p->op_type);
}

/* One error listing every unsupported node, grouped by op type in order of appearance. */
static kiln_status check_supported(fe_ctx *c, const Onnx__GraphProto *gp) {
  size_t n_bad = 0;
  for (size_t i = 0; i < gp->n_node; i++) n_bad += !node_supported(gp->node[i]);
  if (!n_bad) return KILN_OK;
  kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED, "%s: unsupported ONNX ops (opset %lld):", c->file,
                (long long)c->opset);
  bool first_group = true;
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *p = gp->node[i];
    if (node_supported(p)) continue;
    bool seen = false; /* the group was listed at its first node */
    for (size_t j = 0; j < i && !seen; j++) {
      const Onnx__NodeProto *q = gp->node[j];
      seen = !node_supported(q) && !strcmp(q->op_type ? q->op_type : "", p->op_type ? p->op_type : "") &&
             !strcmp(default_domain(q->domain) ? "" : q->domain,
                     default_domain(p->domain) ? "" : p->domain);
    }
    if (seen) continue;
    kiln_diag_append(c->d, "%s %s%s%s (node ", first_group ? "" : ",",
                     default_domain(p->domain) ? "" : p->domain,
                     default_domain(p->domain) ? "" : ".", p->op_type ? p->op_type : "?");
    first_group = false;
    bool first_node = true;
    for (size_t j = i; j < gp->n_node; j++) {
      const Onnx__NodeProto *q = gp->node[j];
      if (node_supported(q) ||
          strcmp(q->op_type ? q->op_type : "", p->op_type ? p->op_type : "") ||
          strcmp(default_domain(q->domain) ? "" : q->domain, default_domain(p->domain) ? "" : p->domain))
        continue;
      kiln_diag_append(c->d, "%s\"%s\"", first_node ? "" : ", ", node_name(c->g, q, j));
      first_node = false;
    }
    kiln_diag_append(c->d, ")");
  }
  return c->d->status;
}

/* ------------------------------------------------------------------ graph inputs */
static kiln_status import_initializers(fe_ctx *c, const Onnx__GraphProto *gp) {
  if (gp->n_sparse_initializer)
    return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED, "%s: sparse initializers are not supported",
                         c->file);
  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *t = gp->initializer[i];
    const char *nm = t->name ? t->name : "";
    char what[320];
    snprintf(what, sizeof what, "initializer '%s'", nm);
    int32_t v;
    if (map_get(&c->values, nm, &v))
      return kiln_diag_set(c->d, KILN_ERR_PARSE, "%s: initializer '%s' is defined twice", c->file, nm);
    kiln_status st = fe_tensor_node(c, t, what, nm, &v);
    if (st != KILN_OK) return st;
    if (!map_put(&c->values, nm, v))
      return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
  }
  return KILN_OK;
}

static kiln_status bind_dim(fe_ctx *c, const char *input, int d, const char *param, int64_t *out) {
  const kiln_load_options *lo = c->o ? c->o->load : NULL;
  int64_t v = lo && lo->default_dim > 0 ? lo->default_dim : 1;
  for (int32_t i = 0; lo && i < lo->n_bindings; i++)
    if (lo->binding_names[i] && !strcmp(lo->binding_names[i], param)) v = lo->binding_values[i];
  if (v < 0)
    return kiln_diag_set(c->d, KILN_ERR_INVALID_ARGUMENT,
                         "%s: input '%s': symbol '%s' (dim %d) is bound to %lld", c->file, input,
                         param, d, (long long)v);
  *out = v;
  return KILN_OK;
}

static kiln_status import_input(fe_ctx *c, const Onnx__ValueInfoProto *vi) {
  const char *nm = vi->name ? vi->name : "";
  for (int32_t i = 0; c->o && i < c->o->n_frozen; i++) {
    const kiln_const *k = &c->o->frozen[i];
    if (!k->name || strcmp(k->name, nm)) continue;
    int32_t v = kiln_ir_constant(c->g, nm, k->dtype, &k->shape, k->data);
    if (v < 0) return kiln_diag_set(c->d, c->g->diag.status, "%s: %s", c->file, c->g->diag.msg);
    if (!map_put(&c->values, nm, v))
      return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
    return KILN_OK;
  }
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
    return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED, "%s: input '%s' is not a tensor", c->file, nm);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  kiln_dtype dt;
  if (!tt->has_elem_type || !fe_dtype(tt->elem_type, &dt))
    return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED, "%s: input '%s' has unsupported dtype %s (%d)",
                         c->file, nm, fe_onnx_type_name(tt->elem_type), (int)tt->elem_type);
  if (!tt->shape)
    return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED,
                         "%s: input '%s' has no shape (Kiln needs static or symbolic dims)",
                         c->file, nm);
  if (tt->shape->n_dim > KILN_MAX_RANK)
    return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED, "%s: input '%s' has rank %zu (at most %d)",
                         c->file, nm, tt->shape->n_dim, KILN_MAX_RANK);
  kiln_shape s = {.rank = (int32_t)tt->shape->n_dim};
  const char *dim_names[KILN_MAX_RANK] = {0};
  for (int i = 0; i < s.rank; i++) {
    const Onnx__TensorShapeProto__Dimension *dm = tt->shape->dim[i];
    if (dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && dm->dim_value >= 0) {
      s.dims[i] = dm->dim_value;
    } else if (dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
               dm->dim_param && *dm->dim_param) {
      kiln_status st = bind_dim(c, nm, i, dm->dim_param, &s.dims[i]);
      if (st != KILN_OK) return st;
      dim_names[i] = dm->dim_param;
    } else {
      return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED,
                           "%s: input '%s' has an unknown dim %d (give it a value or a dim_param "
                           "name to bind)", c->file, nm, i);
    }
  }
  int32_t v = kiln_ir_input(c->g, nm, dt, &s, dim_names);
  if (v < 0) return kiln_diag_set(c->d, c->g->diag.status, "%s: %s", c->file, c->g->diag.msg);
  if (!map_put(&c->values, nm, v))
    return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
  return KILN_OK;
}

/* ------------------------------------------------------------------ nodes */
/* What a wrongly typed attribute holds, for the message. */
static const char *attr_type_name(const Onnx__AttributeProto *a) {
  if (a->has_type) {
    switch (a->type) {
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return "a float";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return "an int";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return "a string";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return "a tensor";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "a graph";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return "a list of floats";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return "a list of ints";
      case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return "a list of strings";
      default: break;
    }
  }
  return "no value of the expected type";
}

static kiln_status import_node(fe_ctx *c, const Onnx__NodeProto *p, size_t index) {
  const char *name = node_name(c->g, p, index);
  if (!name) return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
  int32_t in[64], out[64];
  const Onnx__AttributeProto *bad_attr = NULL;
  fe_node n = {.p = p, .name = name, .n_in = (int32_t)p->n_input, .in = in,
               .n_out = (int32_t)p->n_output, .out = out, .bad_attr = &bad_attr};
  kiln_status ast = check_arity(c, &n);
  if (ast != KILN_OK) return ast;
  if (p->n_input > 64 || p->n_output > 64)
    return fe_fail(c, &n, KILN_ERR_UNSUPPORTED, "more than 64 inputs or outputs");
  for (size_t i = 0; i < p->n_input; i++) {
    in[i] = -1;
    if (!p->input[i] || !*p->input[i]) continue; /* omitted optional input */
    if (!map_get(&c->values, p->input[i], &in[i]))
      return fe_fail(c, &n, KILN_ERR_PARSE,
                     "input '%s' is not defined before this node (graph not sorted?)", p->input[i]);
    if (in[i] == FE_UNPRODUCED)
      return fe_fail(c, &n, KILN_ERR_UNSUPPORTED,
                     "input '%s' is an optional output that Kiln does not compute", p->input[i]);
  }
  for (size_t i = 0; i < p->n_output; i++) out[i] = -1;
  kiln_status st = fe_find_importer(p->op_type)(c, &n);
  if (st == KILN_OK && bad_attr)
    return fe_fail(c, &n, KILN_ERR_PARSE, "attribute '%s' has the wrong type (%s)",
                   bad_attr->name ? bad_attr->name : "?", attr_type_name(bad_attr));
  if (st == KILN_OK && c->g->diag.status != KILN_OK) {
    /* The builder's message starts "node '<name>': "; ours names the node already. */
    const char *msg = c->g->diag.msg;
    size_t nl = strlen(name);
    if (!strncmp(msg, "node '", 6) && !strncmp(msg + 6, name, nl) && !strncmp(msg + 6 + nl, "': ", 3))
      msg += 9 + nl;
    st = fe_fail(c, &n, c->g->diag.status, "%s", msg);
  }
  if (st != KILN_OK) return st;
  for (size_t i = 0; i < p->n_output; i++) {
    if (!p->output[i] || !*p->output[i]) continue;
    int32_t prev;
    /* ONNX is SSA: a second definition would silently shadow the first for later nodes. */
    if (map_get(&c->values, p->output[i], &prev))
      return fe_fail(c, &n, KILN_ERR_PARSE, "output '%s' is already defined (by a graph input, an "
                     "initializer or an earlier node output)", p->output[i]);
    if (!map_put(&c->values, p->output[i], out[i] >= 0 ? out[i] : FE_UNPRODUCED))
      return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
  }
  return KILN_OK;
}

static kiln_status import_outputs(fe_ctx *c, const Onnx__GraphProto *gp) {
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *nm = gp->output[i]->name ? gp->output[i]->name : "";
    int32_t v;
    if (!map_get(&c->values, nm, &v))
      return kiln_diag_set(c->d, KILN_ERR_PARSE, "%s: graph output '%s' is never computed", c->file, nm);
    if (v == FE_UNPRODUCED)
      return kiln_diag_set(c->d, KILN_ERR_UNSUPPORTED,
                           "%s: graph output '%s' is an optional output Kiln does not compute",
                           c->file, nm);
    if (kiln_ir_add_output(c->g, v, nm) < 0)
      return kiln_diag_set(c->d, c->g->diag.status, "%s: %s", c->file, c->g->diag.msg);
  }
  return KILN_OK;
}

/* Drops nodes and constants no output needs: the subgraphs that import-time folding
 * evaluated (shape chains, BatchNormalization parameters) and unused initializers.
 * Graph inputs stay, used or not, since callers pass them by position. */
static kiln_status prune(fe_ctx *c) {
  kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  int32_t *map = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)(n + g->n_consts + 1));
  if (!map) return kiln_diag_set(c->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", c->file);
  int32_t *cmap = map + n;
  for (int32_t i = 0; i < n; i++) map[i] = 0;
  for (int32_t i = 0; i < g->n_outputs; i++) map[g->outputs[i].node] = 1;
  for (int32_t i = 0; i < g->n_inputs; i++) map[g->inputs[i].node] = 1;
  for (int32_t i = n - 1; i >= 0; i--)
    if (map[i])
      for (int32_t j = 0; j < g->nodes[i].n_in; j++) map[g->nodes[i].in[j]] = 1;
  for (int32_t i = 0; i < g->n_consts; i++) cmap[i] = -1;
  int32_t m = 0;
  for (int32_t i = 0; i < n; i++) {
    if (!map[i]) {
      map[i] = -1;
      continue;
    }
    kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) nd->in[j] = map[nd->in[j]];
    if (nd->op == KILN_OP_constant) cmap[nd->index] = 0;
    g->nodes[m] = *nd;
    map[i] = m++;
  }
  g->n_nodes = m;
  for (int32_t i = 0; i < g->n_inputs; i++) g->inputs[i].node = map[g->inputs[i].node];
  for (int32_t i = 0; i < g->n_outputs; i++) g->outputs[i].node = map[g->outputs[i].node];
  int32_t k = 0;
  for (int32_t i = 0; i < g->n_consts; i++) {
    if (cmap[i] < 0) {
      kiln_ir_free(g->alloc, g->consts[i].data);
      continue;
    }
    g->consts[k] = g->consts[i];
    cmap[i] = k++;
  }
  g->n_consts = k;
  for (int32_t i = 0; i < m; i++)
    if (g->nodes[i].op == KILN_OP_constant) g->nodes[i].index = cmap[g->nodes[i].index];
  kiln_ir_free(g->alloc, map);
  return KILN_OK;
}

/* ------------------------------------------------------------------ entry points */
static void *pb_alloc(void *u, size_t n) { return kiln_ir_malloc(u, n); }
static void pb_free(void *u, void *p) { kiln_ir_free(u, p); }

static kiln_status load(const kiln_allocator *a, const void *data, size_t size,
                        const char *model_dir, const char *file, const char *gname,
                        const kiln_fe_options *o, kiln_graph **out, kiln_diag *d) {
  ProtobufCAllocator pa = {pb_alloc, pb_free, (void *)a};
  Onnx__ModelProto *model = onnx__model_proto__unpack(&pa, size, data);
  if (!model)
    return kiln_diag_set(d, KILN_ERR_PARSE, "%s: not a valid ONNX model (protobuf parse failed)", file);
  const Onnx__GraphProto *gp = model->graph;
  if (!gp) {
    onnx__model_proto__free_unpacked(model, &pa);
    return kiln_diag_set(d, KILN_ERR_PARSE, "%s: not a valid ONNX model (no graph)", file);
  }
  fe_ctx c = {.d = d, .o = o, .file = file, .model_dir = model_dir, .opset = 1,
              .values = {.alloc = a}};
  for (size_t i = 0; i < model->n_opset_import; i++)
    if (default_domain(model->opset_import[i]->domain) && model->opset_import[i]->has_version)
      c.opset = model->opset_import[i]->version;
  /* The arity table (and every importer) knows the operators up to FE_ONNX_NEWEST_OPSET;
   * a newer opset may have changed any of them. */
  kiln_status st = KILN_OK;
  if (c.opset < 1)
    st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: default-domain opset %lld is invalid (opsets start at 1)",
                       file, (long long)c.opset);
  else if (c.opset > FE_ONNX_NEWEST_OPSET)
    st = kiln_diag_set(d, KILN_ERR_UNSUPPORTED,
                       "%s: default-domain opset %lld is newer than the newest Kiln supports (%d)",
                       file, (long long)c.opset, FE_ONNX_NEWEST_OPSET);
  if (st != KILN_OK) {
    onnx__model_proto__free_unpacked(model, &pa);
    return st;
  }
  if (!gname || !*gname) gname = gp->name && *gp->name ? gp->name : "model";
  c.g = kiln_ir_graph_create(a, gname);
  st = c.g ? KILN_OK : kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", file);
  if (st == KILN_OK) st = check_supported(&c, gp);
  if (st == KILN_OK) st = import_initializers(&c, gp);
  for (size_t i = 0; st == KILN_OK && i < gp->n_input; i++) {
    int32_t v;
    /* Before IR version 4 initializers were listed as inputs too: they stay constants. */
    const char *nm = gp->input[i]->name ? gp->input[i]->name : "";
    if (!map_get(&c.values, nm, &v))
      st = import_input(&c, gp->input[i]);
    else if (c.g->nodes[v].op == KILN_OP_input)
      st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: graph input '%s' is listed twice", file, nm);
  }
  for (size_t i = 0; st == KILN_OK && i < gp->n_node; i++) st = import_node(&c, gp->node[i], i);
  if (st == KILN_OK) st = import_outputs(&c, gp);
  if (st == KILN_OK) st = prune(&c);
  map_free(&c.values);
  onnx__model_proto__free_unpacked(model, &pa);
  if (st != KILN_OK) {
    kiln_ir_graph_destroy(c.g);
    return st;
  }
  *out = c.g;
  return KILN_OK;
}

kiln_status kiln_fe_load_onnx_buffer(const kiln_allocator *a, const void *data, size_t size,
                                     const char *model_dir, const kiln_fe_options *o,
                                     kiln_graph **g, kiln_diag *d) {
  if (!a) a = kiln_ir_default_allocator();
  *g = NULL;
  return load(a, data, size, model_dir, "<memory>", NULL, o, g, d);
}

kiln_status kiln_fe_load_onnx(const kiln_allocator *a, const char *path, const kiln_fe_options *o,
                              kiln_graph **g, kiln_diag *d) {
  if (!a) a = kiln_ir_default_allocator();
  *g = NULL;
  uint8_t *bytes;
  size_t n;
  kiln_status rst = fe_read_file(a, path, &bytes, &n, d);
  if (rst != KILN_OK) return rst;
  /* The folder holds external data; the file's stem names the graph (AOT prefixes). */
  char dir[PATH_MAX], stem[256];
  fe_dir_of(path, dir, sizeof dir);
  const char *slash = strrchr(path, '/');
  snprintf(stem, sizeof stem, "%s", slash ? slash + 1 : path);
  char *dot = strrchr(stem, '.');
  if (dot && dot != stem) *dot = 0;
  kiln_status st = load(a, bytes, n, dir, path, stem, o, g, d);
  kiln_ir_free(a, bytes);
  return st;
}
