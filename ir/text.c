/* text.c - the graph IR's text form: printer (kiln_ir_print, kiln_ir_print_to_string) and
 * parser (kiln_ir_parse). print(parse(print(g))) == print(g), and every node field, the
 * attributes the op uses (ops.def ATTRS), constant bytes, input/output names, input dim
 * names and the graph name survive a round trip.
 *
 * Syntax:
 *
 *   graph "mlp" {
 *     %0 = input f32[batch=1,784] "x"
 *     %1 = constant f32[784,128] "fc1.weight" hex"0000803f..."
 *     %2 = constant f32[] "two" [2]
 *     %3 = dot f32[1,128] (%0, %1) "MatMul_0"
 *     %4 = permute f32[128,1] (%3) {perm=[1,0]} "T"
 *     %5 = pad f32[130,1] (%4) {lo=[1,0], hi=[1,0], value=0} "Pad_3"
 *     output %5 "y"
 *   }
 *
 * - Nodes are numbered %0, %1, ... in order; inputs refer to earlier nodes.
 * - `type` is dtype[dims]; an input's dim may carry its symbol: `batch=1`.
 * - Node names are C-escaped strings. Attributes are printed exactly for the op's ATTRS
 *   mask, in mask order; arrays have one entry per dim of the node (perm, starts, steps,
 *   pad's lo/hi) or per spatial dim (pool/conv window, strides, dilations, lo, hi), axes
 *   has n_axes entries. When parsing, missing attributes are 0, except strides, dilations
 *   and groups, which default to 1.
 * - input: its input number is its position among the input nodes unless written as
 *   `input #3`; the graph-input name is the node name unless followed by `as "name"`.
 * - constant: inline data creates the next constant-store entry: `[v, ...]` (row-major
 *   values, printed for at most 16 elements, bit-exact shortest decimal) or
 *   hex"..." (the little-endian bytes; used for larger constants and any NaN). When the
 *   store is not one entry per constant node in order (after passes), the printer lists
 *   it first as `const #i f32[2] "name" [1, 2]` and nodes refer to it: `constant #i f32[2]`.
 *   With elide_constants, data of more than 16 elements prints as `...` (does not parse).
 * - Comments: `//`, `;`, or `#` followed by a non-digit, to the end of the line.
 */
#include "ir.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_CONST 16

/* ====================================================================== printer */
static void print_string(kiln_strbuf *b, const char *s) {
  kiln_strbuf_putc(b, '"');
  for (const unsigned char *q = (const unsigned char *)(s ? s : ""); *q; q++) {
    switch (*q) {
    case '"': kiln_strbuf_printf(b, "\\\""); break;
    case '\\': kiln_strbuf_printf(b, "\\\\"); break;
    case '\n': kiln_strbuf_printf(b, "\\n"); break;
    case '\t': kiln_strbuf_printf(b, "\\t"); break;
    case '\r': kiln_strbuf_printf(b, "\\r"); break;
    default:
      if (*q < 0x20 || *q == 0x7f) kiln_strbuf_printf(b, "\\x%02x", *q);
      else kiln_strbuf_putc(b, (char)*q);
    }
  }
  kiln_strbuf_putc(b, '"');
}

static bool is_ident(const char *s) {
  if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
  return true;
}

static void print_type(kiln_strbuf *b, kiln_dtype dt, const kiln_shape *s, const char *const *dim_names) {
  kiln_strbuf_printf(b, "%s[", kiln_dtype_name(dt));
  for (int i = 0; i < s->rank && i < KILN_MAX_RANK; i++) {
    if (i) kiln_strbuf_putc(b, ',');
    if (dim_names && dim_names[i]) {
      if (is_ident(dim_names[i])) kiln_strbuf_printf(b, "%s", dim_names[i]);
      else print_string(b, dim_names[i]);
      kiln_strbuf_putc(b, '=');
    }
    kiln_strbuf_printf(b, "%lld", (long long)s->dims[i]);
  }
  kiln_strbuf_putc(b, ']');
}

/* Shortest decimal that reads back to the same double. */
static void fmt_double(char *buf, size_t n, double v) {
  if (isnan(v)) {
    snprintf(buf, n, "%snan", signbit(v) ? "-" : "");
    return;
  }
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, n, "%.*g", p, v);
    if (strtod(buf, NULL) == v && signbit(strtod(buf, NULL)) == signbit(v)) return;
  }
}

static uint16_t ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Formats element e of constant data exactly; false if it cannot be (NaN, bool not 0/1). */
static bool fmt_elem(char *buf, size_t n, kiln_dtype dt, const unsigned char *p) {
  switch (dt) {
  case KILN_F64: {
    double v;
    memcpy(&v, p, 8);
    if (isnan(v)) return false;
    fmt_double(buf, n, v);
    return true;
  }
  case KILN_F32: case KILN_F16: case KILN_BF16: {
    float v;
    uint16_t h = 0;
    if (dt == KILN_F32) memcpy(&v, p, 4);
    else {
      h = ld16(p);
      v = dt == KILN_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
    }
    if (isnan(v)) return false;
    for (int pr = 1; pr <= 9; pr++) {
      snprintf(buf, n, "%.*g", pr, (double)v);
      float r = strtof(buf, NULL);
      bool same = dt == KILN_F32   ? memcmp(&r, &v, 4) == 0
                  : dt == KILN_F16 ? kiln_f32_to_f16(r) == h
                                   : kiln_f32_to_bf16(r) == h;
      if (same) return true;
    }
    return false;
  }
  case KILN_I8: snprintf(buf, n, "%d", (int)*(const int8_t *)p); return true;
  case KILN_I16: { int16_t v; memcpy(&v, p, 2); snprintf(buf, n, "%d", (int)v); return true; }
  case KILN_I32: { int32_t v; memcpy(&v, p, 4); snprintf(buf, n, "%ld", (long)v); return true; }
  case KILN_I64: { int64_t v; memcpy(&v, p, 8); snprintf(buf, n, "%lld", (long long)v); return true; }
  case KILN_U8: snprintf(buf, n, "%u", (unsigned)*p); return true;
  case KILN_BOOL:
    if (*p > 1) return false;
    snprintf(buf, n, "%u", (unsigned)*p);
    return true;
  default: return false;
  }
}

static void print_data(kiln_strbuf *b, const kiln_const *c, const kiln_print_options *o) {
  int64_t numel = kiln_shape_numel(&c->shape);
  size_t es = kiln_dtype_size(c->dtype);
  const unsigned char *p = c->data;
  if (numel > SMALL_CONST && o && o->elide_constants) {
    kiln_strbuf_printf(b, " ...");
    return;
  }
  if (numel <= SMALL_CONST && c->nbytes == (size_t)numel * es) {
    char vals[SMALL_CONST][48];
    bool ok = true;
    for (int64_t i = 0; i < numel && ok; i++) ok = fmt_elem(vals[i], sizeof vals[i], c->dtype, p + (size_t)i * es);
    if (ok) {
      kiln_strbuf_printf(b, " [");
      for (int64_t i = 0; i < numel; i++) kiln_strbuf_printf(b, "%s%s", i ? ", " : "", vals[i]);
      kiln_strbuf_putc(b, ']');
      return;
    }
  }
  kiln_strbuf_printf(b, " hex\"");
  kiln_strbuf_reserve(b, c->nbytes * 2);
  if (b->oom) return;
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < c->nbytes; i++) {
    b->s[b->len++] = hx[p[i] >> 4];
    b->s[b->len++] = hx[p[i] & 15];
  }
  b->s[b->len] = 0;
  kiln_strbuf_putc(b, '"');
}

/* Array lengths of each attribute for a node (see the syntax note at the top). */
static int spatial_count(const kiln_node *n) { return n->shape.rank >= 2 ? n->shape.rank - 2 : 0; }

static void print_i64s(kiln_strbuf *b, const char *key, const int64_t *v, int n, bool *first) {
  kiln_strbuf_printf(b, "%s%s=[", *first ? "" : ", ", key);
  for (int i = 0; i < n; i++) kiln_strbuf_printf(b, "%s%lld", i ? "," : "", (long long)v[i]);
  kiln_strbuf_putc(b, ']');
  *first = false;
}

static void print_i32s(kiln_strbuf *b, const char *key, const int32_t *v, int n, bool *first) {
  kiln_strbuf_printf(b, "%s%s=[", *first ? "" : ", ", key);
  for (int i = 0; i < n; i++) kiln_strbuf_printf(b, "%s%d", i ? "," : "", (int)v[i]);
  kiln_strbuf_putc(b, ']');
  *first = false;
}

static void print_int(kiln_strbuf *b, const char *key, long long v, bool *first) {
  kiln_strbuf_printf(b, "%s%s=%lld", *first ? "" : ", ", key, v);
  *first = false;
}

static void print_attrs(kiln_strbuf *b, const kiln_node *n) {
  uint32_t m = kiln_op_table[n->op].attrs;
  if (!m) return;
  const kiln_attrs *a = &n->a;
  int r = n->shape.rank, k = spatial_count(n);
  int lohi = n->op == KILN_OP_pad ? r : k;
  int nax = a->n_axes < 0 ? 0 : a->n_axes > KILN_MAX_RANK ? KILN_MAX_RANK : a->n_axes;
  bool first = true;
  kiln_strbuf_printf(b, " {");
  if (m & KILN_A_AXIS) print_int(b, "axis", a->axis, &first);
  if (m & KILN_A_AXES) print_i32s(b, "axes", a->axes, nax, &first);
  if (m & KILN_A_KEEPDIMS) print_int(b, "keepdims", a->keepdims, &first);
  if (m & KILN_A_PERM) print_i32s(b, "perm", a->perm, r, &first);
  if (m & KILN_A_STARTS) print_i64s(b, "starts", a->starts, r, &first);
  if (m & KILN_A_STEPS) print_i64s(b, "steps", a->steps, r, &first);
  if (m & KILN_A_LO) print_i64s(b, "lo", a->lo, lohi, &first);
  if (m & KILN_A_HI) print_i64s(b, "hi", a->hi, lohi, &first);
  if (m & KILN_A_VALUE) {
    char v[48];
    fmt_double(v, sizeof v, a->value);
    kiln_strbuf_printf(b, "%svalue=%s", first ? "" : ", ", v);
    first = false;
  }
  if (m & KILN_A_KIND) print_int(b, "kind", a->kind, &first);
  if (m & KILN_A_WINDOW) print_i64s(b, "window", a->window, k, &first);
  if (m & KILN_A_STRIDES) print_i64s(b, "strides", a->strides, k, &first);
  if (m & KILN_A_DILATIONS) print_i64s(b, "dilations", a->dilations, k, &first);
  if (m & KILN_A_GROUPS) print_int(b, "groups", a->groups, &first);
  if (m & KILN_A_COUNT_PAD) print_int(b, "count_include_pad", a->count_include_pad, &first);
  if (m & KILN_A_K) print_int(b, "k", (long long)a->k, &first);
  kiln_strbuf_putc(b, '}');
}

/* Constants print inline when the store is exactly one entry per constant node, in node
 * order, with the node's name; otherwise the store is listed first. */
static bool consts_inline(const kiln_graph *g) {
  int32_t next = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->op != KILN_OP_constant) continue;
    if (n->index != next || next >= g->n_consts) return false;
    const kiln_const *c = &g->consts[next];
    if (strcmp(c->name ? c->name : "", n->name ? n->name : "") != 0 || c->dtype != n->dtype ||
        !kiln_shape_eq(&c->shape, &n->shape))
      return false;
    next++;
  }
  return next == g->n_consts;
}

static void print_graph(kiln_strbuf *b, const kiln_graph *g, const kiln_print_options *o) {
  kiln_strbuf_printf(b, "graph ");
  print_string(b, g->name);
  kiln_strbuf_printf(b, " {\n");
  bool inl = consts_inline(g);
  if (!inl)
    for (int i = 0; i < g->n_consts; i++) {
      const kiln_const *c = &g->consts[i];
      kiln_strbuf_printf(b, "  const #%d ", i);
      print_type(b, c->dtype, &c->shape, NULL);
      kiln_strbuf_putc(b, ' ');
      print_string(b, c->name);
      print_data(b, c, o);
      kiln_strbuf_putc(b, '\n');
    }
  int32_t n_inputs_seen = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    kiln_strbuf_printf(b, "  %%%d = %s ", i, kiln_op_name(n->op));
    const kiln_graph_io *io = NULL;
    if (n->op == KILN_OP_input) {
      if (n->index != n_inputs_seen) kiln_strbuf_printf(b, "#%d ", (int)n->index);
      n_inputs_seen++;
      if (n->index >= 0 && n->index < g->n_inputs) io = &g->inputs[n->index];
    } else if (n->op == KILN_OP_constant && !inl) {
      kiln_strbuf_printf(b, "#%d ", (int)n->index);
    }
    print_type(b, n->dtype, &n->shape, io ? io->dim_names : NULL);
    if (n->n_in > 0) {
      kiln_strbuf_printf(b, " (");
      for (int k = 0; k < n->n_in; k++) kiln_strbuf_printf(b, "%s%%%d", k ? ", " : "", (int)n->in[k]);
      kiln_strbuf_putc(b, ')');
    }
    if ((unsigned)n->op < KILN_OP_COUNT) print_attrs(b, n);
    kiln_strbuf_putc(b, ' ');
    print_string(b, n->name);
    if (io && strcmp(io->name ? io->name : "", n->name ? n->name : "") != 0) {
      kiln_strbuf_printf(b, " as ");
      print_string(b, io->name);
    }
    if (n->op == KILN_OP_constant && inl) print_data(b, &g->consts[n->index], o);
    kiln_strbuf_putc(b, '\n');
  }
  for (int i = 0; i < g->n_outputs; i++) {
    kiln_strbuf_printf(b, "  output %%%d ", (int)g->outputs[i].node);
    print_string(b, g->outputs[i].name);
    kiln_strbuf_putc(b, '\n');
  }
  kiln_strbuf_printf(b, "}\n");
}

char *kiln_ir_print_to_string(const kiln_graph *g, const kiln_print_options *o) {
  kiln_strbuf b = {.a = g->alloc};
  print_graph(&b, g, o);
  if (b.oom) {
    kiln_ir_free(b.a, b.s);
    return NULL;
  }
  return b.s;
}

kiln_status kiln_ir_print(const kiln_graph *g, FILE *f, const kiln_print_options *o) {
  char *s = kiln_ir_print_to_string(g, o);
  if (!s) return KILN_ERR_OUT_OF_MEMORY;
  size_t n = strlen(s);
  kiln_status st = fwrite(s, 1, n, f) == n ? KILN_OK : KILN_ERR_IO;
  kiln_ir_free(g->alloc, s);
  return st;
}

/* ====================================================================== parser */
typedef enum tok_kind {
  T_EOF,
  T_IDENT,  /* [A-Za-z_][A-Za-z0-9_.]* */
  T_NUM,    /* -?digits[.digits][e[+-]digits], -?inf, -?nan */
  T_STR,    /* "..." with C escapes */
  T_HEX,    /* hex"..." */
  T_PCT,    /* %N */
  T_HASH,   /* #N */
  T_PUNCT,  /* = [ ] ( ) { } , */
  T_DOTS,   /* ... */
  T_BAD,
} tok_kind;

typedef struct tok {
  tok_kind k;
  const char *p; /* start in the text */
  size_t n;
  int line, col;
} tok;

typedef struct parser {
  const char *src, *cur, *file;
  int line;
  const char *line_start;
  tok t; /* current token */
  kiln_graph *g;
  kiln_diag *d;
  bool failed;
  int32_t *in; /* node input list scratch */
  int32_t cap_in;
} parser;

static void skip_space(parser *p) {
  for (;;) {
    char c = *p->cur;
    if (c == '\n') {
      p->cur++;
      p->line++;
      p->line_start = p->cur;
    } else if (c == ' ' || c == '\t' || c == '\r') {
      p->cur++;
    } else if (c == ';' || (c == '/' && p->cur[1] == '/') || (c == '#' && !isdigit((unsigned char)p->cur[1]))) {
      while (*p->cur && *p->cur != '\n') p->cur++;
    } else {
      return;
    }
  }
}

static void lex(parser *p) {
  skip_space(p);
  tok t = {.p = p->cur, .line = p->line, .col = (int)(p->cur - p->line_start) + 1};
  const char *s = p->cur;
  char c = *s;
  if (!c) {
    t.k = T_EOF;
  } else if (c == 'h' && strncmp(s, "hex\"", 4) == 0) {
    s += 4;
    while (*s && *s != '"' && *s != '\n') s++;
    t.k = *s == '"' ? T_HEX : T_BAD;
    if (*s == '"') s++;
  } else if (isalpha((unsigned char)c) || c == '_') {
    while (isalnum((unsigned char)*s) || *s == '_' || *s == '.') s++;
    /* inf and nan are numbers (constant values, pad value). */
    t.k = (s - t.p == 3 && (strncmp(t.p, "inf", 3) == 0 || strncmp(t.p, "nan", 3) == 0)) ? T_NUM : T_IDENT;
  } else if (c == '"') {
    s++;
    while (*s && *s != '"' && *s != '\n') s += (*s == '\\' && s[1]) ? 2 : 1;
    t.k = *s == '"' ? T_STR : T_BAD;
    if (*s == '"') s++;
  } else if (isdigit((unsigned char)c) || ((c == '-' || c == '+') && (isdigit((unsigned char)s[1]) || isalpha((unsigned char)s[1]) || s[1] == '.')) ||
             (c == '.' && isdigit((unsigned char)s[1]))) {
    if (c == '-' || c == '+') s++;
    if (isalpha((unsigned char)*s)) {
      while (isalpha((unsigned char)*s)) s++;
    } else {
      while (isdigit((unsigned char)*s) || *s == '.') s++;
      if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        while (isdigit((unsigned char)*s)) s++;
      }
    }
    t.k = T_NUM;
  } else if ((c == '%' || c == '#') && isdigit((unsigned char)s[1])) {
    s++;
    while (isdigit((unsigned char)*s)) s++;
    t.k = c == '%' ? T_PCT : T_HASH;
  } else if (c == '.' && s[1] == '.' && s[2] == '.') {
    s += 3;
    t.k = T_DOTS;
  } else if (strchr("=[](){},", c)) {
    s++;
    t.k = T_PUNCT;
  } else {
    s++;
    t.k = T_BAD;
  }
  t.n = (size_t)(s - t.p);
  p->cur = s;
  p->t = t;
}

static bool perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool perr(parser *p, const char *fmt, ...) {
  if (p->failed) return false;
  p->failed = true;
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  char got[40];
  if (p->t.k == T_EOF) snprintf(got, sizeof got, "end of input");
  else {
    size_t n = p->t.n > 24 ? 24 : p->t.n;
    char frag[32];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) frag[j++] = isprint((unsigned char)p->t.p[i]) ? p->t.p[i] : '?';
    frag[j] = 0;
    snprintf(got, sizeof got, "'%s%s'", frag, p->t.n > n ? "..." : "");
  }
  kiln_diag_set(p->d, KILN_ERR_PARSE, "%s:%d:%d: %s, got %s", p->file, p->t.line, p->t.col, what, got);
  return false;
}

/* An allocation failed: that is KILN_ERR_OUT_OF_MEMORY, not a syntax error. */
static bool poom(parser *p) {
  if (p->failed) return false;
  p->failed = true;
  kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s:%d:%d: out of memory", p->file, p->t.line, p->t.col);
  return false;
}

static bool is_punct(parser *p, char c) { return p->t.k == T_PUNCT && p->t.p[0] == c; }
static bool is_word(parser *p, const char *w) {
  return p->t.k == T_IDENT && p->t.n == strlen(w) && strncmp(p->t.p, w, p->t.n) == 0;
}

static bool expect_punct(parser *p, char c) {
  if (!is_punct(p, c)) return perr(p, "expected '%c'", c);
  lex(p);
  return true;
}

/* Token text into buf (NUL-terminated); false if too long. */
static bool tok_text(const tok *t, char *buf, size_t n) {
  if (t->n + 1 > n) return false;
  memcpy(buf, t->p, t->n);
  buf[t->n] = 0;
  return true;
}

static bool parse_int(parser *p, int64_t lo, int64_t hi, int64_t *out, const char *what) {
  char buf[64];
  if (p->t.k != T_NUM || !tok_text(&p->t, buf, sizeof buf)) return perr(p, "expected an integer (%s)", what);
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (*end || errno) return perr(p, "expected an integer (%s)", what);
  if (v < lo || v > hi) return perr(p, "%s out of range [%lld, %lld]", what, (long long)lo, (long long)hi);
  *out = v;
  lex(p);
  return true;
}

static bool parse_double(parser *p, double *out, const char *what) {
  char buf[64];
  if (p->t.k != T_NUM || !tok_text(&p->t, buf, sizeof buf)) return perr(p, "expected a number (%s)", what);
  char *end;
  double v = strtod(buf, &end);
  if (*end) return perr(p, "expected a number (%s)", what);
  *out = v;
  lex(p);
  return true;
}

static bool parse_ref(parser *p, tok_kind k, int64_t *out) {
  if (p->t.k != k) return perr(p, k == T_PCT ? "expected a node reference %%N" : "expected an index #N");
  char buf[32];
  if (!tok_text(&p->t, buf, sizeof buf)) return perr(p, "number too long");
  errno = 0;
  long long v = strtoll(buf + 1, NULL, 10);
  if (errno || v > INT32_MAX) return perr(p, "index out of range");
  *out = v;
  lex(p);
  return true;
}

/* Decodes the current string token into the graph arena. */
static bool parse_string(parser *p, const char **out, const char *what) {
  if (p->t.k != T_STR) return perr(p, "expected a quoted %s", what);
  char *s = kiln_arena_alloc(p->g->arena, p->t.n);
  if (!s) {
    kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", p->file);
    p->failed = true;
    return false;
  }
  size_t j = 0;
  for (const char *q = p->t.p + 1; q < p->t.p + p->t.n - 1; q++) {
    if (*q != '\\') {
      s[j++] = *q;
      continue;
    }
    q++;
    switch (*q) {
    case 'n': s[j++] = '\n'; break;
    case 't': s[j++] = '\t'; break;
    case 'r': s[j++] = '\r'; break;
    case '"': s[j++] = '"'; break;
    case '\\': s[j++] = '\\'; break;
    case 'x': {
      int v = 0, nd = 0;
      while (nd < 2 && isxdigit((unsigned char)q[1])) {
        q++;
        v = v * 16 + (isdigit((unsigned char)*q) ? *q - '0' : (tolower((unsigned char)*q) - 'a' + 10));
        nd++;
      }
      if (nd == 0 || v == 0) return perr(p, "bad \\x escape in %s", what);
      s[j++] = (char)v;
      break;
    }
    default: return perr(p, "unknown escape '\\%c' in %s", *q, what);
    }
  }
  s[j] = 0;
  *out = s;
  lex(p);
  return true;
}

/* dtype[dims]; dim names only where names != NULL. */
static bool parse_type(parser *p, kiln_dtype *dt, kiln_shape *s, const char **names) {
  char buf[16];
  if (p->t.k != T_IDENT || !tok_text(&p->t, buf, sizeof buf) || !kiln_dtype_from_name(buf, dt))
    return perr(p, "expected a dtype (f32, f64, f16, bf16, i8, i16, i32, i64, u8, bool)");
  lex(p);
  if (!expect_punct(p, '[')) return false;
  memset(s, 0, sizeof *s);
  while (!is_punct(p, ']')) {
    if (s->rank > 0 && !expect_punct(p, ',')) return false;
    if (s->rank >= KILN_MAX_RANK) return perr(p, "rank exceeds %d", KILN_MAX_RANK);
    if (p->t.k == T_IDENT || p->t.k == T_STR) {
      if (!names) return perr(p, "dim names are allowed only on inputs");
      const char *nmv;
      if (p->t.k == T_STR) {
        if (!parse_string(p, &nmv, "dim name")) return false;
      } else {
        char *q = kiln_arena_alloc(p->g->arena, p->t.n + 1);
        if (!q) return poom(p);
        memcpy(q, p->t.p, p->t.n);
        nmv = q;
        lex(p);
      }
      names[s->rank] = nmv;
      if (!expect_punct(p, '=')) return false;
    }
    if (!parse_int(p, 0, INT64_MAX / 2, &s->dims[s->rank], "dim")) return false;
    s->rank++;
  }
  /* Element counts must stay far from int64 overflow (numel products, byte sizes). */
  int64_t prod = 1;
  for (int i = 0; i < s->rank; i++)
    if (s->dims[i] > 0) {
      if (prod > (INT64_C(1) << 50) / s->dims[i]) return perr(p, "shape has too many elements");
      prod *= s->dims[i];
    }
  lex(p);
  return true;
}

static bool parse_i64_list(parser *p, int64_t *v, int *n, const char *what) {
  if (!expect_punct(p, '[')) return false;
  *n = 0;
  while (!is_punct(p, ']')) {
    if (*n > 0 && !expect_punct(p, ',')) return false;
    if (*n >= KILN_MAX_RANK) return perr(p, "too many entries in %s (at most %d)", what, KILN_MAX_RANK);
    if (!parse_int(p, INT64_MIN / 4, INT64_MAX / 4, &v[*n], what)) return false;
    (*n)++;
  }
  lex(p);
  return true;
}

typedef struct attr_key {
  const char *name;
  uint32_t bit;
} attr_key;

static const attr_key attr_keys[] = {
    {"axis", KILN_A_AXIS},         {"axes", KILN_A_AXES},       {"keepdims", KILN_A_KEEPDIMS},
    {"perm", KILN_A_PERM},         {"starts", KILN_A_STARTS},   {"steps", KILN_A_STEPS},
    {"lo", KILN_A_LO},             {"hi", KILN_A_HI},           {"value", KILN_A_VALUE},
    {"kind", KILN_A_KIND},         {"window", KILN_A_WINDOW},   {"strides", KILN_A_STRIDES},
    {"dilations", KILN_A_DILATIONS}, {"groups", KILN_A_GROUPS}, {"count_include_pad", KILN_A_COUNT_PAD},
    {"k", KILN_A_K},
};

static bool parse_attrs(parser *p, kiln_op op, const kiln_shape *s, kiln_attrs *a) {
  uint32_t mask = kiln_op_table[op].attrs, seen = 0;
  int r = s->rank, k = r >= 2 ? r - 2 : 0, lohi = op == KILN_OP_pad ? r : k;
  if (!is_punct(p, '{')) return true;
  lex(p);
  while (!is_punct(p, '}')) {
    if (seen && !expect_punct(p, ',')) return false;
    const attr_key *key = NULL;
    for (size_t i = 0; i < sizeof attr_keys / sizeof attr_keys[0]; i++)
      if (is_word(p, attr_keys[i].name)) key = &attr_keys[i];
    if (!key) return perr(p, "expected an attribute name");
    if (!(mask & key->bit)) return perr(p, "op %s has no attribute '%s'", kiln_op_name(op), key->name);
    if (seen & key->bit) return perr(p, "attribute '%s' given twice", key->name);
    seen |= key->bit;
    lex(p);
    if (!expect_punct(p, '=')) return false;
    int64_t v[KILN_MAX_RANK] = {0}, x;
    int n = 0, want = -1;
    switch (key->bit) {
    case KILN_A_AXIS: if (!parse_int(p, -KILN_MAX_RANK, KILN_MAX_RANK, &x, "axis")) return false; a->axis = (int32_t)x; break;
    case KILN_A_KEEPDIMS: if (!parse_int(p, 0, 1, &x, "keepdims")) return false; a->keepdims = (int32_t)x; break;
    case KILN_A_KIND: if (!parse_int(p, 0, 16, &x, "kind")) return false; a->kind = (int32_t)x; break;
    case KILN_A_GROUPS: if (!parse_int(p, 0, INT32_MAX, &x, "groups")) return false; a->groups = (int32_t)x; break;
    case KILN_A_COUNT_PAD: if (!parse_int(p, 0, 1, &x, "count_include_pad")) return false; a->count_include_pad = (int32_t)x; break;
    case KILN_A_K: if (!parse_int(p, 0, INT64_MAX / 2, &x, "k")) return false; a->k = x; break;
    case KILN_A_VALUE: if (!parse_double(p, &a->value, "value")) return false; break;
    default: {
      if (!parse_i64_list(p, v, &n, key->name)) return false;
      switch (key->bit) {
      case KILN_A_AXES:
        for (int i = 0; i < n; i++) {
          if (v[i] < -KILN_MAX_RANK || v[i] > KILN_MAX_RANK) return perr(p, "axis out of range in axes");
          a->axes[i] = (int32_t)v[i];
        }
        a->n_axes = n;
        break;
      case KILN_A_PERM:
        want = r;
        for (int i = 0; i < n; i++) {
          if (v[i] < -KILN_MAX_RANK || v[i] > KILN_MAX_RANK) return perr(p, "perm entry out of range");
          a->perm[i] = (int32_t)v[i];
        }
        break;
      case KILN_A_STARTS: want = r; memcpy(a->starts, v, sizeof v); break;
      case KILN_A_STEPS: want = r; memcpy(a->steps, v, sizeof v); break;
      case KILN_A_LO: want = lohi; memcpy(a->lo, v, sizeof v); break;
      case KILN_A_HI: want = lohi; memcpy(a->hi, v, sizeof v); break;
      case KILN_A_WINDOW: want = k; memcpy(a->window, v, sizeof v); break;
      case KILN_A_STRIDES: want = k; memcpy(a->strides, v, sizeof v); break;
      case KILN_A_DILATIONS: want = k; memcpy(a->dilations, v, sizeof v); break;
      default: break;
      }
      if (want >= 0 && n != want) {
        kiln_diag_set(p->d, KILN_ERR_PARSE, "%s:%d:%d: attribute '%s' of %s needs %d entries, got %d", p->file,
                      p->t.line, p->t.col, key->name, kiln_op_name(op), want, n);
        p->failed = true;
        return false;
      }
    }
    }
  }
  lex(p);
  return true;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = (char)tolower((unsigned char)c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Reads one element in dtype dt from the current number token into out. */
static bool parse_elem(parser *p, kiln_dtype dt, unsigned char *out) {
  char buf[64];
  if (p->t.k != T_NUM || !tok_text(&p->t, buf, sizeof buf)) return perr(p, "expected a %s value", kiln_dtype_name(dt));
  char *end;
  if (kiln_dtype_is_float(dt)) {
    if (dt == KILN_F64) {
      double v = strtod(buf, &end);
      memcpy(out, &v, 8);
    } else {
      float v = strtof(buf, &end);
      if (dt == KILN_F32) memcpy(out, &v, 4);
      else {
        uint16_t h = dt == KILN_F16 ? kiln_f32_to_f16(v) : kiln_f32_to_bf16(v);
        memcpy(out, &h, 2);
      }
    }
    if (*end) return perr(p, "expected a %s value", kiln_dtype_name(dt));
    lex(p);
    return true;
  }
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (*end || errno) return perr(p, "expected a %s value", kiln_dtype_name(dt));
  static const long long lo[] = {[KILN_I8] = INT8_MIN, [KILN_I16] = INT16_MIN, [KILN_I32] = INT32_MIN,
                                 [KILN_I64] = INT64_MIN, [KILN_U8] = 0, [KILN_BOOL] = 0};
  static const long long hi[] = {[KILN_I8] = INT8_MAX, [KILN_I16] = INT16_MAX, [KILN_I32] = INT32_MAX,
                                 [KILN_I64] = INT64_MAX, [KILN_U8] = UINT8_MAX, [KILN_BOOL] = 1};
  if (v < lo[dt] || v > hi[dt]) return perr(p, "value out of range for %s", kiln_dtype_name(dt));
  switch (dt) {
  case KILN_I8: { int8_t x = (int8_t)v; memcpy(out, &x, 1); break; }
  case KILN_I16: { int16_t x = (int16_t)v; memcpy(out, &x, 2); break; }
  case KILN_I32: { int32_t x = (int32_t)v; memcpy(out, &x, 4); break; }
  case KILN_I64: { int64_t x = (int64_t)v; memcpy(out, &x, 8); break; }
  default: *out = (unsigned char)v; break;
  }
  lex(p);
  return true;
}

/* Constant data (values list or hex) into a new store entry; returns its index or -1. */
static int32_t parse_const_data(parser *p, kiln_dtype dt, const kiln_shape *s, const char *name) {
  int64_t numel = kiln_shape_numel(s);
  size_t es = kiln_dtype_size(dt);
  if (numel < 0 || numel > (int64_t)(SIZE_MAX / 4 / es)) {
    perr(p, "constant too large");
    return -1;
  }
  size_t nbytes = (size_t)numel * es;
  if (p->t.k == T_DOTS) {
    perr(p, "constant '%s' was printed with elided data and cannot be parsed", name);
    return -1;
  }
  if (p->t.k == T_HEX) {
    size_t nhex = p->t.n - 5; /* hex"..." */
    if (nhex != nbytes * 2) {
      perr(p, "hex data of constant '%s' has %zu digits, %s%s needs %zu", name, nhex, kiln_dtype_name(dt),
           numel == 1 ? "" : " data", nbytes * 2);
      return -1;
    }
    /* Decode straight into the constant store entry (no second copy). */
    int32_t ci = kiln_ir_add_const(p->g, dt, s, NULL, name);
    if (ci < 0) {
      kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s: %s", p->file, p->g->diag.msg);
      p->failed = true;
      return -1;
    }
    unsigned char *dst = p->g->consts[ci].data;
    const char *h = p->t.p + 4;
    for (size_t i = 0; i < nbytes; i++) {
      int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
      if (a < 0 || b < 0) {
        perr(p, "bad hex digit in data of constant '%s'", name);
        return -1;
      }
      dst[i] = (unsigned char)(a * 16 + b);
    }
    lex(p);
    return ci;
  }
  if (!is_punct(p, '[')) {
    perr(p, "expected constant data: [values], hex\"...\"");
    return -1;
  }
  if (numel > 4096) {
    perr(p, "value lists are for small constants; use hex\"...\" for '%s'", name);
    return -1;
  }
  int32_t ci = kiln_ir_add_const(p->g, dt, s, NULL, name);
  if (ci < 0) {
    kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s: %s", p->file, p->g->diag.msg);
    p->failed = true;
    return -1;
  }
  unsigned char *dst = p->g->consts[ci].data;
  lex(p);
  int64_t i = 0;
  for (; !is_punct(p, ']'); i++) {
    if (i > 0 && !expect_punct(p, ',')) return -1;
    if (i >= numel) break;
    if (!parse_elem(p, dt, dst + (size_t)i * es)) return -1;
  }
  if (i != numel || !is_punct(p, ']')) {
    perr(p, "constant '%s' of %s needs exactly %lld values", name, kiln_dtype_name(dt), (long long)numel);
    return -1;
  }
  lex(p);
  return ci;
}

typedef struct pending_input {
  int32_t node;
  const char *io_name;
  const char *dim_names[KILN_MAX_RANK];
} pending_input;

static bool parse_const_decl(parser *p) {
  lex(p); /* const */
  int64_t idx;
  if (!parse_ref(p, T_HASH, &idx)) return false;
  if (idx != p->g->n_consts) return perr(p, "constant #%lld out of order (expected #%d)", (long long)idx, (int)p->g->n_consts);
  kiln_dtype dt;
  kiln_shape s;
  const char *name;
  if (!parse_type(p, &dt, &s, NULL) || !parse_string(p, &name, "constant name")) return false;
  return parse_const_data(p, dt, &s, name) >= 0;
}

static bool parse_node(parser *p, pending_input **pend, int32_t *n_pend, int32_t *cap_pend) {
  kiln_graph *g = p->g;
  int64_t id = 0;
  if (!parse_ref(p, T_PCT, &id)) return false;
  if (id != g->n_nodes) return perr(p, "node %%%lld out of order (expected %%%d)", (long long)id, (int)g->n_nodes);
  if (!expect_punct(p, '=')) return false;
  char opname[32];
  kiln_op op;
  if (p->t.k != T_IDENT || !tok_text(&p->t, opname, sizeof opname) || !kiln_op_from_name(opname, &op))
    return perr(p, "expected an op name");
  lex(p);
  int64_t index = -1;
  if (p->t.k == T_HASH) {
    if (op != KILN_OP_input && op != KILN_OP_constant) return perr(p, "only input and constant take #index");
    if (!parse_ref(p, T_HASH, &index)) return false;
  }
  kiln_dtype dt;
  kiln_shape s;
  const char *dim_names[KILN_MAX_RANK] = {0};
  if (!parse_type(p, &dt, &s, op == KILN_OP_input ? dim_names : NULL)) return false;
  int32_t n_in = 0;
  if (is_punct(p, '(')) {
    lex(p);
    while (!is_punct(p, ')')) {
      if (n_in > 0 && !expect_punct(p, ',')) return false;
      int64_t r;
      if (!parse_ref(p, T_PCT, &r)) return false;
      if (r >= id) return perr(p, "input %%%lld is not an earlier node", (long long)r);
      if (n_in >= p->cap_in) {
        int32_t nc = p->cap_in ? p->cap_in * 2 : 16;
        int32_t *ni = kiln_ir_realloc(g->alloc, p->in, sizeof(int32_t) * (size_t)nc);
        if (!ni) return poom(p);
        p->in = ni;
        p->cap_in = nc;
      }
      p->in[n_in++] = (int32_t)r;
    }
    lex(p);
  }
  const int32_t *in = p->in;
  kiln_attrs a;
  memset(&a, 0, sizeof a);
  /* Defaults for hand-written text; entries past the spatial count stay 0 as the builder
   * leaves them, so printed graphs round-trip exactly. */
  uint32_t mask = kiln_op_table[op].attrs;
  int k = s.rank >= 2 ? s.rank - 2 : 0;
  for (int i = 0; i < k; i++) {
    if (mask & KILN_A_STRIDES) a.strides[i] = 1;
    if (mask & KILN_A_DILATIONS) a.dilations[i] = 1;
  }
  if (mask & KILN_A_GROUPS) a.groups = 1;
  if (!parse_attrs(p, op, &s, &a)) return false;
  const char *name;
  if (!parse_string(p, &name, "node name")) return false;
  const char *io_name = name;
  if (is_word(p, "as")) {
    if (op != KILN_OP_input) return perr(p, "'as' names a graph input; only input nodes take it");
    lex(p);
    if (!parse_string(p, &io_name, "input name")) return false;
  }
  if (op == KILN_OP_constant) {
    if (index < 0) {
      index = parse_const_data(p, dt, &s, name);
      if (index < 0) return false;
    } else if (index >= g->n_consts) {
      return perr(p, "constant #%lld is not declared", (long long)index);
    }
  }
  if (op == KILN_OP_input) {
    if (index < 0) index = *n_pend;
    if (*n_pend >= *cap_pend) {
      int32_t nc = *cap_pend ? *cap_pend * 2 : 8;
      pending_input *np = kiln_ir_realloc(g->alloc, *pend, sizeof **pend * (size_t)nc);
      if (!np) return poom(p);
      *pend = np;
      *cap_pend = nc;
    }
    pending_input *pi = &(*pend)[(*n_pend)++];
    pi->node = g->n_nodes;
    pi->io_name = io_name;
    memcpy(pi->dim_names, dim_names, sizeof dim_names);
  }
  int32_t nid = kiln_ir_append(g, op, dt, &s, n_in, in, &a, name);
  if (nid < 0) {
    kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s: %s", p->file, g->diag.msg);
    p->failed = true;
    return false;
  }
  if (index > INT32_MAX) return perr(p, "index out of range");
  g->nodes[nid].index = (int32_t)(index < 0 ? 0 : index);
  return true;
}

static bool parse_output(parser *p) {
  lex(p); /* output */
  int64_t v;
  const char *name;
  if (!parse_ref(p, T_PCT, &v)) return false;
  if (v >= p->g->n_nodes) return perr(p, "output %%%lld is not a node", (long long)v);
  if (!parse_string(p, &name, "output name")) return false;
  if (kiln_ir_add_output(p->g, (int32_t)v, name) < 0) return poom(p);
  return true;
}

/* Adds the graph input list in input-number order once all input nodes are known. */
static bool finish_inputs(parser *p, pending_input *pend, int32_t n) {
  kiln_graph *g = p->g;
  for (int32_t j = 0; j < n; j++) {
    int32_t found = -1;
    for (int32_t i = 0; i < n; i++)
      if (g->nodes[pend[i].node].index == j) {
        if (found >= 0) {
          kiln_diag_set(p->d, KILN_ERR_PARSE, "%s: nodes %%%d and %%%d are both input #%d", p->file,
                        (int)pend[found].node, (int)pend[i].node, (int)j);
          return false;
        }
        found = i;
      }
    if (found < 0) {
      kiln_diag_set(p->d, KILN_ERR_PARSE, "%s: no node is input #%d (%d input nodes)", p->file, (int)j, (int)n);
      return false;
    }
    const pending_input *pi = &pend[found];
    if (kiln_ir_add_input_io(g, pi->node, pi->io_name, pi->dim_names, g->nodes[pi->node].shape.rank) < 0) {
      kiln_diag_set(p->d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", p->file);
      return false;
    }
  }
  return true;
}

kiln_status kiln_ir_parse(const kiln_allocator *a, const char *text, const char *filename, kiln_graph **out,
                          kiln_diag *d) {
  kiln_diag local = {0};
  if (!d) d = &local;
  if (out) *out = NULL;
  if (!text || !out) return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "kiln_ir_parse: no text or no result");
  parser p = {.src = text, .cur = text, .file = filename ? filename : "<text>", .line = 1, .line_start = text, .d = d};
  p.g = kiln_ir_graph_create(a, "model");
  if (!p.g) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", p.file);
  pending_input *pend = NULL;
  int32_t n_pend = 0, cap_pend = 0;
  bool ok = false;
  lex(&p);
  do {
    if (!is_word(&p, "graph")) {
      perr(&p, "expected 'graph'");
      break;
    }
    lex(&p);
    if (!parse_string(&p, &p.g->name, "graph name") || !expect_punct(&p, '{')) break;
    bool item_ok = true;
    while (item_ok && !is_punct(&p, '}')) {
      if (is_word(&p, "const")) item_ok = parse_const_decl(&p);
      else if (is_word(&p, "output")) item_ok = parse_output(&p);
      else if (p.t.k == T_PCT) item_ok = parse_node(&p, &pend, &n_pend, &cap_pend);
      else item_ok = perr(&p, "expected a node '%%N = ...', 'output', 'const' or '}'");
    }
    if (!item_ok) break;
    lex(&p);
    if (p.t.k != T_EOF) {
      perr(&p, "expected end of input after the graph");
      break;
    }
    if (!finish_inputs(&p, pend, n_pend)) break;
    ok = true;
  } while (0);
  kiln_ir_free(p.g->alloc, pend);
  kiln_ir_free(p.g->alloc, p.in);
  if (ok) {
    kiln_diag vd = {0};
    if (kiln_ir_verify(p.g, &vd) != KILN_OK) {
      kiln_diag_set(d, vd.status, "%s: %s", p.file, vd.msg);
      ok = false;
    }
  }
  if (!ok) {
    if (d->status == KILN_OK) kiln_diag_set(d, KILN_ERR_PARSE, "%s: parse error", p.file);
    kiln_ir_graph_destroy(p.g);
    return d->status;
  }
  *out = p.g;
  return KILN_OK;
}
