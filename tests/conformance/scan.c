/* scan.c - a light read of an ONNX model's protobuf wire format, for the conformance runner.
 *
 * The runner must decide, before it forks a child to compile a case, what op the case
 * tests and whether the case uses something Kiln's API cannot represent at all (sequence,
 * map or optional values; string, complex, unsigned 16/32/64-bit, 8- and 4-bit float or
 * 4- and 2-bit int tensors). Those cases are skipped, every other case counts. It also collects
 * the dim_param names of the inputs so that symbolic dims can be bound to the test data's
 * shapes, and the input names, so that inputs frozen to test data can be matched. The
 * generated protobuf-c code is private to the frontend, so this walks the wire format
 * directly: it needs only a handful of fields.
 */
#include "conformance.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers from onnx.proto. */
enum {
  MODEL_GRAPH = 7,
  GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12,
  GRAPH_VALUE_INFO = 13, GRAPH_SPARSE_INITIALIZER = 15,
  NODE_OP_TYPE = 4, NODE_ATTRIBUTE = 5, NODE_DOMAIN = 7,
  ATTR_NAME = 1, ATTR_I = 3, ATTR_T = 5, ATTR_G = 6, ATTR_TENSORS = 10, ATTR_GRAPHS = 11,
  ATTR_TP = 14, ATTR_TYPE_PROTOS = 15, ATTR_SPARSE_TENSOR = 22, ATTR_SPARSE_TENSORS = 23,
  TENSOR_DATA_TYPE = 2, TENSOR_NAME = 8,
  SPARSE_VALUES = 1,
  VALUE_INFO_NAME = 1, VALUE_INFO_TYPE = 2,
  TYPE_TENSOR = 1, TYPE_SEQUENCE = 4, TYPE_MAP = 5, TYPE_SPARSE_TENSOR = 8, TYPE_OPTIONAL = 9,
  TYPE_TENSOR_ELEM = 1, TYPE_TENSOR_SHAPE = 2,
  SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2,
};

typedef struct buf {
  const uint8_t *p, *end;
} buf;

typedef struct field {
  uint32_t num;
  uint32_t wire;
  uint64_t v;   /* varint / fixed value */
  buf sub;      /* length-delimited payload */
} field;

typedef struct scan {
  conf_model_info *info;
  bool bad;       /* malformed wire data */
} scan;

static bool read_varint(buf *b, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64 && b->p < b->end; shift += 7) {
    uint8_t c = *b->p++;
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

/* Next field of b; false at the end or on malformed data (s->bad set). */
static bool next_field(scan *s, buf *b, field *f) {
  if (b->p >= b->end) return false;
  uint64_t key;
  if (!read_varint(b, &key)) goto bad;
  f->num = (uint32_t)(key >> 3);
  f->wire = (uint32_t)(key & 7);
  f->v = 0;
  f->sub.p = f->sub.end = NULL;
  switch (f->wire) {
  case 0:
    if (!read_varint(b, &f->v)) goto bad;
    return true;
  case 1:
    if (b->end - b->p < 8) goto bad;
    memcpy(&f->v, b->p, 8);
    b->p += 8;
    return true;
  case 5:
    if (b->end - b->p < 4) goto bad;
    memcpy(&f->v, b->p, 4);
    b->p += 4;
    return true;
  case 2: {
    uint64_t n;
    if (!read_varint(b, &n) || n > (uint64_t)(b->end - b->p)) goto bad;
    f->sub.p = b->p;
    f->sub.end = b->p + n;
    b->p += n;
    return true;
  }
  default:
    goto bad;
  }
bad:
  s->bad = true;
  return false;
}

static void copy_str(char *dst, size_t cap, buf b) {
  size_t n = (size_t)(b.end - b.p);
  if (n >= cap) n = cap - 1;
  memcpy(dst, b.p, n);
  dst[n] = 0;
}

/* Name of an ONNX elem type Kiln cannot represent, or NULL when Kiln has a dtype for it
 * (0, "undefined", counts as representable: nothing is known). */
static const char *unsupported_elem(uint64_t t) {
  switch (t) {
  case 0: case 1: case 2: case 3: case 5: case 6: case 7: case 9: case 10: case 11: case 16:
    return NULL;
  case 4: return "uint16";
  case 8: return "string";
  case 12: return "uint32";
  case 13: return "uint64";
  case 14: return "complex64";
  case 15: return "complex128";
  case 17: case 18: case 19: case 20: case 24: return "float8";
  case 21: return "uint4";
  case 22: return "int4";
  case 23: return "float4";
  case 25: return "uint2";
  case 26: return "int2";
  default: return "an unknown dtype";
  }
}

static void skip_because(scan *s, const char *what, const char *detail) {
  if (s->info->skip[0]) return; /* the first reason wins */
  snprintf(s->info->skip, sizeof s->info->skip, "%s%s%s", what, detail ? " " : "",
           detail ? detail : "");
}

static void check_elem(scan *s, uint64_t t) {
  const char *bad = unsupported_elem(t);
  if (bad) skip_because(s, "dtype", bad);
}

/* TypeProto. dims (may be NULL) receives the dim_param names of a tensor type. */
static void scan_type(scan *s, buf b, char (*dims)[48]) {
  field f;
  while (next_field(s, &b, &f)) {
    if (f.wire != 2) continue;
    switch (f.num) {
    case TYPE_TENSOR: {
      buf t = f.sub;
      field g;
      while (next_field(s, &t, &g)) {
        if (g.num == TYPE_TENSOR_ELEM && g.wire == 0) check_elem(s, g.v);
        if (g.num == TYPE_TENSOR_SHAPE && g.wire == 2 && dims) {
          buf sh = g.sub;
          field d;
          int rank = 0;
          while (next_field(s, &sh, &d)) {
            if (d.num != SHAPE_DIM || d.wire != 2) continue;
            buf dim = d.sub;
            field e;
            while (next_field(s, &dim, &e))
              if (e.num == DIM_PARAM && e.wire == 2 && rank < CONF_MAX_RANK)
                copy_str(dims[rank], 48, e.sub);
            rank++;
          }
        }
      }
      break;
    }
    case TYPE_SEQUENCE: skip_because(s, "non-tensor type", "sequence"); break;
    case TYPE_MAP: skip_because(s, "non-tensor type", "map"); break;
    case TYPE_OPTIONAL: skip_because(s, "non-tensor type", "optional"); break;
    case TYPE_SPARSE_TENSOR: skip_because(s, "non-tensor type", "sparse tensor"); break;
    default: break;
    }
  }
}

/* ValueInfoProto: its type; its name into name (may be NULL). */
static void scan_value_info(scan *s, buf b, char *name, size_t cap, char (*dims)[48]) {
  field f;
  while (next_field(s, &b, &f)) {
    if (f.wire != 2) continue;
    if (f.num == VALUE_INFO_NAME && name) copy_str(name, cap, f.sub);
    if (f.num == VALUE_INFO_TYPE) scan_type(s, f.sub, dims);
  }
}

static void scan_tensor(scan *s, buf b, char *name, size_t cap) {
  field f;
  while (next_field(s, &b, &f)) {
    if (f.num == TENSOR_DATA_TYPE && f.wire == 0) check_elem(s, f.v);
    if (f.num == TENSOR_NAME && f.wire == 2 && name) copy_str(name, cap, f.sub);
  }
}

static void scan_sparse_tensor(scan *s, buf b) {
  field f;
  while (next_field(s, &b, &f))
    if (f.num == SPARSE_VALUES && f.wire == 2) scan_tensor(s, f.sub, NULL, 0);
}

static void scan_graph(scan *s, buf b, bool top);

static void scan_attribute(scan *s, buf b) {
  field f;
  char name[64] = "";
  buf a = b;
  while (next_field(s, &a, &f))
    if (f.num == ATTR_NAME && f.wire == 2) copy_str(name, sizeof name, f.sub);
  /* Attributes that name a dtype (Cast's "to", EyeLike's "dtype", ...) or carry strings. */
  bool names_dtype = !strcmp(name, "to") || !strcmp(name, "dtype") || !strcmp(name, "output_dtype");
  if (!strcmp(name, "value_string") || !strcmp(name, "value_strings"))
    skip_because(s, "dtype", "string");
  while (next_field(s, &b, &f)) {
    if (f.num == ATTR_I && f.wire == 0 && names_dtype) check_elem(s, f.v);
    if (f.wire != 2) continue;
    switch (f.num) {
    case ATTR_T: case ATTR_TENSORS: scan_tensor(s, f.sub, NULL, 0); break;
    case ATTR_SPARSE_TENSOR: case ATTR_SPARSE_TENSORS: scan_sparse_tensor(s, f.sub); break;
    case ATTR_G: case ATTR_GRAPHS: scan_graph(s, f.sub, false); break;
    case ATTR_TP: case ATTR_TYPE_PROTOS: scan_type(s, f.sub, NULL); break;
    default: break;
    }
  }
}

static void scan_node(scan *s, buf b, bool top) {
  field f;
  char op[64] = "", domain[64] = "";
  while (next_field(s, &b, &f)) {
    if (f.wire != 2) continue;
    if (f.num == NODE_OP_TYPE) copy_str(op, sizeof op, f.sub);
    if (f.num == NODE_DOMAIN) copy_str(domain, sizeof domain, f.sub);
    if (f.num == NODE_ATTRIBUTE) scan_attribute(s, f.sub);
  }
  if (!top) return;
  if (s->info->n_nodes++ == 0) {
    if (domain[0] && strcmp(domain, "ai.onnx"))
      snprintf(s->info->op_type, sizeof s->info->op_type, "%s.%s", domain, op);
    else
      snprintf(s->info->op_type, sizeof s->info->op_type, "%s", op);
  }
}

static void scan_graph(scan *s, buf b, bool top) {
  /* First pass: initializer names, so that inputs that are also initializers (old IR
   * versions list them as inputs) are not counted as inputs the test feeds. */
  enum { MAX_INITS = 256 };
  char (*inits)[64] = top ? calloc(MAX_INITS, 64) : NULL;
  int n_inits = 0;
  field f;
  buf a = b;
  while (next_field(s, &a, &f)) {
    if (f.wire != 2) continue;
    if (f.num == GRAPH_INITIALIZER)
      scan_tensor(s, f.sub, inits && n_inits < MAX_INITS ? inits[n_inits++] : NULL, 64);
    if (f.num == GRAPH_SPARSE_INITIALIZER) scan_sparse_tensor(s, f.sub);
  }
  while (next_field(s, &b, &f)) {
    if (f.wire != 2) continue;
    switch (f.num) {
    case GRAPH_NODE: scan_node(s, f.sub, top); break;
    case GRAPH_OUTPUT: case GRAPH_VALUE_INFO: scan_value_info(s, f.sub, NULL, 0, NULL); break;
    case GRAPH_INPUT: {
      conf_model_info *in = s->info;
      if (!top || in->n_inputs >= CONF_MAX_INPUTS) {
        scan_value_info(s, f.sub, NULL, 0, NULL);
        break;
      }
      char name[64] = "";
      char dims[CONF_MAX_RANK][48];
      memset(dims, 0, sizeof dims);
      scan_value_info(s, f.sub, name, sizeof name, dims);
      bool is_init = false;
      for (int i = 0; i < n_inits && !is_init; i++) is_init = !strcmp(inits[i], name);
      if (!is_init) {
        snprintf(in->input_name[in->n_inputs], sizeof in->input_name[0], "%s", name);
        memcpy(in->dim_param[in->n_inputs++], dims, sizeof dims);
      }
      break;
    }
    default: break;
    }
  }
  free(inits);
}

int conf_scan_model(const char *path, conf_model_info *info, char *msg, size_t msg_size) {
  memset(info, 0, sizeof *info);
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(msg, msg_size, "cannot open %s", path);
    return -1;
  }
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  uint8_t *data = n > 0 ? malloc((size_t)n) : NULL;
  if (!data || fread(data, 1, (size_t)n, fp) != (size_t)n) {
    fclose(fp);
    free(data);
    snprintf(msg, msg_size, "cannot read %s", path);
    return -1;
  }
  fclose(fp);
  scan s = {info, false};
  buf b = {data, data + n};
  field f;
  bool have_graph = false;
  while (next_field(&s, &b, &f))
    if (f.num == MODEL_GRAPH && f.wire == 2) {
      scan_graph(&s, f.sub, true);
      have_graph = true;
    }
  free(data);
  if (s.bad || !have_graph) {
    snprintf(msg, msg_size, "%s: %s", path, s.bad ? "malformed protobuf" : "no graph");
    return -1;
  }
  return 0;
}
