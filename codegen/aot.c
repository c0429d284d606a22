/* aot.c - ahead-of-time export: writes the program's object file (code plus embedded
 * constants kiln_c<idx>), generates self-contained glue C (the typed API and the model's
 * description, <prefix>_describe, also exported as kiln_aot_describe for dlsym) and the
 * documented header <prefix>.h, and links them with the AOT runtime into a shared
 * library that depends on nothing of Kiln. Also which prefixes may name that API. */
#include "llvm_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ names and types */
static const char *c_type(kiln_dtype t) {
  switch (t) {
  case KILN_F32: return "float";
  case KILN_F64: return "double";
  case KILN_F16: case KILN_BF16: return "uint16_t";
  case KILN_I8: return "int8_t";
  case KILN_I16: return "int16_t";
  case KILN_I32: return "int32_t";
  case KILN_I64: return "int64_t";
  default: return "uint8_t"; /* u8, bool */
  }
}

static bool in_list(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(s, list[i])) return true;
  return false;
}

/* C11's keywords and C23's new ones (a header may be compiled as either, or as C++'s
 * common subset: bool, true, false). */
static const char *const c_keywords[] = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
    "_Alignas", "_Alignof", "_Atomic", "_Bool", "_Complex", "_Generic", "_Imaginary", "_Noreturn",
    "_Static_assert", "_Thread_local", "alignas", "alignof", "bool", "constexpr", "false", "nullptr",
    "static_assert", "thread_local", "true", "typeof", "typeof_unqual"};
#define N_KEYWORDS (sizeof c_keywords / sizeof c_keywords[0])

static bool is_c_keyword(const char *s) { return in_list(s, c_keywords, N_KEYWORDS) || !strcmp(s, "model"); }

static bool is_identifier(const char *s) {
  if (!s || !*s || (*s >= '0' && *s <= '9')) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

bool kiln_llvm_check_prefix(const char *prefix, char *why, size_t n) {
  /* Names the generated header and glue use besides the prefix's own: a prefix equal to
   * one would redeclare it. */
  static const char *const used[] = {"free", "calloc", "aligned_alloc", "memcpy", "size_t", "int8_t", "int16_t",
                                     "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t"};
  const char *w = NULL;
  if (!is_identifier(prefix)) w = "is not a C identifier (letters, digits and _, not starting with a digit)";
  else if (in_list(prefix, c_keywords, N_KEYWORDS)) w = "is a C keyword";
  else if (strlen(prefix) > 200) w = "is longer than 200 characters";
  else if (prefix[0] == '_' && (prefix[1] == '_' || (prefix[1] >= 'A' && prefix[1] <= 'Z')))
    w = "is reserved to the C implementation (it starts with __ or _ and a capital)";
  else if (!strcmp(prefix, "kiln") || !strncmp(prefix, "kiln_", 5)) w = "starts with kiln_, Kiln's own names";
  else if (in_list(prefix, used, sizeof used / sizeof used[0])) w = "is a name the generated C code uses already";
  if (!w) return true;
  snprintf(why, n, "%s: the typed API's names start with it (PREFIX_create, PREFIX_run)", w);
  return false;
}

/* Parameter names, one per input then output: C identifiers from the tensor names,
 * unique, never a keyword or the model parameter. */
#define KILN_PNAME 80
typedef char pname[KILN_PNAME];

static void param_names(const kiln_kprogram *p, pname *out) {
  for (int32_t idx = 0; idx < p->n_inputs + p->n_outputs; idx++) {
    const char *src = idx < p->n_inputs ? p->inputs[idx].name : p->outputs[idx - p->n_inputs].name;
    char *o = out[idx];
    size_t j = 0;
    if (!src || !*src || (*src >= '0' && *src <= '9')) o[j++] = '_';
    for (; src && *src && j < KILN_PNAME - 16; src++) {
      char c = *src;
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
      o[j++] = ok ? c : '_';
    }
    o[j] = 0;
    for (int n = 0;; n++) {
      if (n) snprintf(o + j, KILN_PNAME - j, "_%d", n);
      bool clash = is_c_keyword(o);
      for (int32_t k = 0; k < idx && !clash; k++) clash = !strcmp(out[k], o);
      if (!clash) break;
    }
  }
}

static void shape_text(const kiln_shape *s, char *out, size_t n) {
  size_t j = (size_t)snprintf(out, n, "[");
  for (int i = 0; i < s->rank && j < n; i++) j += (size_t)snprintf(out + j, n - j, i ? ",%lld" : "%lld", (long long)s->dims[i]);
  if (j < n) snprintf(out + j, n - j, "]");
}

/* A string as a C literal (names come from model files). */
static void c_string(kiln_strbuf *b, const char *s) {
  kiln_strbuf_printf(b, "\"");
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') kiln_strbuf_printf(b, "\\%c", c);
    else if (c < 32 || c >= 127) kiln_strbuf_printf(b, "\\%03o", c);
    else kiln_strbuf_printf(b, "%c", c);
  }
  kiln_strbuf_printf(b, "\"");
}

/* A string inside a C comment. */
static void comment_string(kiln_strbuf *b, const char *s) {
  for (; s && *s; s++) {
    if (s[0] == '*' && s[1] == '/') kiln_strbuf_printf(b, "* /");
    else kiln_strbuf_printf(b, "%c", (unsigned char)*s >= 32 ? *s : ' ');
    if (s[0] == '*' && s[1] == '/') s++;
  }
}

/* ------------------------------------------------------------------ header */
/* The header spells kiln_aot_io's dims as [8]; it must match rt.h's struct. */
_Static_assert(KILN_MAX_RANK == 8, "generated kiln_aot_io assumes KILN_MAX_RANK == 8");

static const char aot_model_struct[] =
    "#ifndef KILN_AOT_MODEL_DEFINED\n"
    "#define KILN_AOT_MODEL_DEFINED\n"
    "#define KILN_AOT_ABI_VERSION 1\n"
    "/* One input or output: dtype codes 0 f32, 1 f64, 2 f16, 3 bf16, 4 i8, 5 i16, 6 i32,\n"
    " * 7 i64, 8 u8, 9 bool. */\n"
    "typedef struct kiln_aot_io {\n"
    "  const char *name;\n"
    "  int32_t dtype;\n"
    "  int32_t rank;\n"
    "  int64_t dims[8];\n"
    "} kiln_aot_io;\n"
    "\n"
    "typedef struct kiln_aot_model {\n"
    "  int32_t abi_version;\n"
    "  const char *name;\n"
    "  int32_t n_inputs, n_outputs;\n"
    "  const kiln_aot_io *inputs, *outputs;\n"
    "  int32_t n_kernels;\n"
    "  int64_t arena_bytes;\n"
    "  int (*create)(void **model, int threads);\n"
    "  int (*run)(void *model, const void *const *inputs, void *const *outputs);\n"
    "  void (*destroy)(void *model);\n"
    "  const char *(*strerror)(int code);\n"
    "} kiln_aot_model;\n"
    "#endif\n";

static void io_doc(kiln_strbuf *b, const kiln_kprogram *p, const pname *names, int32_t i) {
  bool in = i < p->n_inputs;
  int32_t j = in ? i : i - p->n_inputs;
  kiln_dtype dt = in ? p->in_dtypes[j] : p->out_dtypes[j];
  const kiln_shape *s = in ? &p->in_shapes[j] : &p->out_shapes[j];
  char sh[200];
  shape_text(s, sh, sizeof sh);
  kiln_strbuf_printf(b, " *   %-6s %-12s \"", in ? "input" : "output", names[i]);
  comment_string(b, in ? p->inputs[j].name : p->outputs[j].name);
  kiln_strbuf_printf(b, "\"  %s %s  (%s, %lld elements)\n", kiln_dtype_name(dt), sh, c_type(dt), (long long)kiln_shape_numel(s));
}

/* The typed run's parameter list (shared by header and glue). */
static void run_params(kiln_strbuf *b, const kiln_kprogram *p, const pname *names, const char *prefix, bool comments) {
  kiln_strbuf_printf(b, "int %s_run(%s *model", prefix, prefix);
  for (int32_t i = 0; i < p->n_inputs + p->n_outputs; i++) {
    bool in = i < p->n_inputs;
    int32_t j = in ? i : i - p->n_inputs;
    kiln_dtype dt = in ? p->in_dtypes[j] : p->out_dtypes[j];
    char sh[200];
    kiln_strbuf_printf(b, ",\n    %s%s *%s", in ? "const " : "", c_type(dt), names[i]);
    if (comments) {
      shape_text(in ? &p->in_shapes[j] : &p->out_shapes[j], sh, sizeof sh);
      kiln_strbuf_printf(b, " /* %s %s %s \"", sh, in ? "input" : "output", kiln_dtype_name(dt));
      comment_string(b, in ? p->inputs[j].name : p->outputs[j].name);
      kiln_strbuf_printf(b, "\" */");
    }
  }
  kiln_strbuf_printf(b, ")");
}

static void write_header(kiln_strbuf *b, const kiln_kprogram *p, const pname *names, const char *prefix) {
  const char *mname = p->name ? p->name : prefix;
  kiln_strbuf_printf(b, "/* %s.h - generated by Kiln (%s): the C interface of the compiled model \"", prefix, kiln_llvm_version());
  comment_string(b, mname);
  kiln_strbuf_printf(b, "\".\n *\n"
               " * The shared library holds the model's generated code, its weights and the small\n"
               " * runtime it needs (a thread pool, GEMM); it depends on nothing of Kiln.\n *\n"
               " * INPUTS AND OUTPUTS (dense, row-major, caller-owned buffers)\n");
  for (int32_t i = 0; i < p->n_inputs + p->n_outputs; i++) io_doc(b, p, names, i);
  kiln_strbuf_printf(b, " *   f16 and bf16 elements are passed as their raw 16-bit patterns; bool as one byte 0/1.\n"
               " *\n * RETURN CODES\n"
               " *   0 ok, 1 invalid argument (a NULL model or buffer), 2 out of memory,\n"
               " *   3 an index in the input data is out of range (a gather or scatter index outside\n"
               " *     [-dim, dim) in an input: the outputs are then not valid).\n"
               " *   %s_strerror(code) gives a message.\n"
               " *\n * THREADS\n"
               " *   options.threads: worker threads (<= 0: all CPUs, 1: run on the caller).\n"
               " *   One %s_run at a time per model object (they share its scratch memory); use\n"
               " *   one object per concurrent caller.\n"
               " *\n * EXAMPLE\n",
            prefix, prefix);
  for (int32_t i = 0; i < p->n_inputs + p->n_outputs; i++) {
    bool in = i < p->n_inputs;
    int32_t j = in ? i : i - p->n_inputs;
    const kiln_shape *s = in ? &p->in_shapes[j] : &p->out_shapes[j];
    kiln_strbuf_printf(b, " *   static %s %s[%lld];%s\n", c_type(in ? p->in_dtypes[j] : p->out_dtypes[j]), names[i],
              (long long)kiln_shape_numel(s), in ? "  (fill it)" : "");
  }
  kiln_strbuf_printf(b, " *   %s *m;\n *   %s_options opt = {.threads = 0};\n"
               " *   if (%s_create(&m, &opt) != 0) return 1;\n *   int rc = %s_run(m",
            prefix, prefix, prefix, prefix);
  for (int32_t i = 0; i < p->n_inputs + p->n_outputs; i++) kiln_strbuf_printf(b, ", %s", names[i]);
  kiln_strbuf_printf(b, ");\n"
               " *   if (rc != 0) fprintf(stderr, \"%%s\\n\", %s_strerror(rc));\n"
               " *   %s_destroy(m);\n"
               " *\n * %s_describe() gives the names, dtypes, shapes and generic entry points. Loaders\n"
               " * that know no model in advance look up the same description as\n"
               " * dlsym(library, \"kiln_aot_describe\"); every Kiln library exports that name, so\n"
               " * a program that links several calls each one's PREFIX_describe instead.\n */\n",
            prefix, prefix, prefix);
  char guard[256];
  size_t gl = 0;
  for (const char *c = prefix; *c && gl < sizeof guard - 16; c++)
    guard[gl++] = (*c >= 'a' && *c <= 'z') ? (char)(*c - 'a' + 'A') : *c;
  snprintf(guard + gl, sizeof guard - gl, "_KILN_H");
  kiln_strbuf_printf(b, "#ifndef %s\n#define %s\n\n#include <stdint.h>\n\n"
               "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
            guard, guard);
  kiln_strbuf_printf(b, "typedef struct %s %s;\n", prefix, prefix);
  kiln_strbuf_printf(b, "typedef struct %s_options {\n  int threads; /* worker threads; <= 0: all CPUs */\n} %s_options;\n\n", prefix, prefix);
  kiln_strbuf_printf(b, "/* Allocates the model (scratch memory, thread pool). opt may be NULL. */\n");
  kiln_strbuf_printf(b, "int %s_create(%s **m, const %s_options *opt);\n\n", prefix, prefix, prefix);
  kiln_strbuf_printf(b, "/* Runs the model once: inputs are read, outputs written in full. */\n");
  run_params(b, p, names, prefix, true);
  kiln_strbuf_printf(b, ";\n\nconst char *%s_strerror(int code);\nvoid %s_destroy(%s *m);\n\n", prefix, prefix, prefix);
  kiln_strbuf_printf(b, "%s\n/* This library's self-description (its generic entry points). */\n"
               "const kiln_aot_model *%s_describe(void);\n\n"
               "#ifdef __cplusplus\n}\n#endif\n#endif\n",
            aot_model_struct, prefix);
}

/* ------------------------------------------------------------------ glue */
static void write_glue(kiln_strbuf *b, const kiln_kprogram *p, const pname *names, const char *prefix) {
  kiln_strbuf_printf(b, "/* Glue generated by Kiln for model %s: the typed API and its description over the\n"
               " * generated entry %s_kiln_main. Self-contained: includes no Kiln header. */\n",
            prefix, prefix);
  kiln_strbuf_printf(b, "#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n\n"
               "#define KILN_EXPORT __attribute__((visibility(\"default\")))\n"
               "#define KILN_HIDDEN __attribute__((visibility(\"hidden\")))\n\n"
               "typedef struct kiln_rt_pool kiln_rt_pool;\n"
               "KILN_HIDDEN kiln_rt_pool *kiln_rt_pool_create(const void *alloc, int threads, int64_t spin_us);\n"
               "KILN_HIDDEN void kiln_rt_pool_destroy(kiln_rt_pool *p);\n"
               "KILN_HIDDEN void %s_kiln_main(void **bufs, kiln_rt_pool *pool);\n",
            prefix);
  for (int32_t i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *bf = &p->buffers[i];
    bool first = true;
    for (int32_t j = 0; j < i && bf->kind == KILN_BUF_CONST; j++)
      if (p->buffers[j].kind == KILN_BUF_CONST && p->buffers[j].index == bf->index) first = false;
    if (bf->kind == KILN_BUF_CONST && first)
      kiln_strbuf_printf(b, "extern KILN_HIDDEN const unsigned char kiln_c%d[];\n", bf->index);
  }
  kiln_strbuf_printf(b, "\n%s\n", aot_model_struct);
  kiln_strbuf_printf(b, "typedef struct %s_options { int threads; } %s_options;\n", prefix, prefix);
  int32_t nb = p->n_buffers > 0 ? p->n_buffers : 1;
  kiln_strbuf_printf(b, "typedef struct %s {\n  unsigned char *arena;\n  kiln_rt_pool *pool;\n  void *bufs[%d];\n} %s;\n\n",
            prefix, nb, prefix);
  int64_t arena = (int64_t)((p->arena_bytes + 63) / 64 * 64);
  kiln_strbuf_printf(b, "KILN_EXPORT void %s_destroy(%s *m) {\n  if (!m) return;\n"
               "  if (m->pool) kiln_rt_pool_destroy(m->pool);\n  free(m->arena);\n  free(m);\n}\n\n",
            prefix, prefix);
  kiln_strbuf_printf(b, "KILN_EXPORT int %s_create(%s **out, const %s_options *opt) {\n"
               "  if (!out) return 1;\n  *out = NULL;\n"
               "  %s *m = calloc(1, sizeof *m);\n  if (!m) return 2;\n",
            prefix, prefix, prefix, prefix);
  if (arena > 0)
    kiln_strbuf_printf(b, "  m->arena = aligned_alloc(64, %lld);\n  if (!m->arena) { %s_destroy(m); return 2; }\n",
              (long long)arena, prefix);
  kiln_strbuf_printf(b, "  m->pool = kiln_rt_pool_create(NULL, opt ? opt->threads : 0, -1);\n"
               "  if (!m->pool) { %s_destroy(m); return 2; }\n",
            prefix);
  for (int32_t i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *bf = &p->buffers[i];
    if (bf->kind == KILN_BUF_CONST) kiln_strbuf_printf(b, "  m->bufs[%d] = (void *)kiln_c%d;\n", i, bf->index);
    else if (bf->kind == KILN_BUF_ARENA) kiln_strbuf_printf(b, "  m->bufs[%d] = m->arena + %lld;\n", i, (long long)bf->offset);
  }
  kiln_strbuf_printf(b, "  *out = m;\n  return 0;\n}\n\n");
  kiln_strbuf_printf(b, "KILN_EXPORT ");
  run_params(b, p, names, prefix, false);
  kiln_strbuf_printf(b, " {\n  if (!model) return 1;\n");
  for (int32_t i = 0; i < p->n_inputs + p->n_outputs; i++) {
    kiln_strbuf_printf(b, "  if (!%s) return 1;\n", names[i]);
  }
  /* one slot more: the error word (runtime ABI, rt.h) */
  kiln_strbuf_printf(b, "  int32_t err = 0;\n  void *bufs[%d];\n  memcpy(bufs, model->bufs, sizeof model->bufs);\n"
                        "  bufs[%d] = &err;\n",
                     p->n_buffers + 1, p->n_buffers);
  for (int32_t i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *bf = &p->buffers[i];
    if (bf->kind != KILN_BUF_INPUT && bf->kind != KILN_BUF_OUTPUT) continue;
    kiln_strbuf_printf(b, "  bufs[%d] = (void *)%s;\n", i, names[bf->kind == KILN_BUF_INPUT ? bf->index : p->n_inputs + bf->index]);
  }
  kiln_strbuf_printf(b, "  %s_kiln_main(bufs, model->pool);\n  return err ? 3 : 0;\n}\n\n", prefix);
  kiln_strbuf_printf(b, "KILN_EXPORT const char *%s_strerror(int code) {\n"
               "  switch (code) {\n  case 0: return \"ok\";\n"
               "  case 1: return \"invalid argument (a NULL model or buffer)\";\n"
               "  case 2: return \"out of memory\";\n"
               "  case 3: return \"an index in the input data is out of range\";\n"
               "  default: return \"unknown error code\";\n  }\n}\n\n",
            prefix);
  /* generic entry */
  kiln_strbuf_printf(b, "static int kiln_generic_create(void **m, int threads) {\n"
               "  if (!m) return 1;\n  %s_options o = {threads};\n  return %s_create((%s **)m, &o);\n}\n",
            prefix, prefix, prefix);
  kiln_strbuf_printf(b, "static int kiln_generic_run(void *m, const void *const *in, void *const *out) {\n");
  if (p->n_inputs) kiln_strbuf_printf(b, "  if (!in) return 1;\n");
  if (p->n_outputs) kiln_strbuf_printf(b, "  if (!out) return 1;\n");
  kiln_strbuf_printf(b, "  return %s_run((%s *)m", prefix, prefix);
  for (int32_t i = 0; i < p->n_inputs; i++) kiln_strbuf_printf(b, ", (const %s *)in[%d]", c_type(p->in_dtypes[i]), i);
  for (int32_t i = 0; i < p->n_outputs; i++) kiln_strbuf_printf(b, ", (%s *)out[%d]", c_type(p->out_dtypes[i]), i);
  kiln_strbuf_printf(b, ");\n}\n");
  kiln_strbuf_printf(b, "static void kiln_generic_destroy(void *m) { %s_destroy((%s *)m); }\n\n", prefix, prefix);
  for (int io = 0; io < 2; io++) {
    int32_t n = io ? p->n_outputs : p->n_inputs;
    kiln_strbuf_printf(b, "static const kiln_aot_io kiln_%s[%d] = {\n", io ? "outputs" : "inputs", n > 0 ? n : 1);
    for (int32_t i = 0; i < n; i++) {
      const kiln_shape *s = io ? &p->out_shapes[i] : &p->in_shapes[i];
      kiln_strbuf_printf(b, "  {");
      c_string(b, io ? p->outputs[i].name : p->inputs[i].name);
      kiln_strbuf_printf(b, ", %d, %d, {", (int)(io ? p->out_dtypes[i] : p->in_dtypes[i]), s->rank);
      for (int d = 0; d < s->rank; d++) kiln_strbuf_printf(b, "%s%lld", d ? ", " : "", (long long)s->dims[d]);
      kiln_strbuf_printf(b, "}},\n");
    }
    kiln_strbuf_printf(b, "};\n");
  }
  kiln_strbuf_printf(b, "static const kiln_aot_model kiln_model = {\n  KILN_AOT_ABI_VERSION, ");
  c_string(b, p->name ? p->name : prefix);
  kiln_strbuf_printf(b, ", %d, %d, kiln_inputs, kiln_outputs, %d, %lld,\n"
               "  kiln_generic_create, kiln_generic_run, kiln_generic_destroy, %s_strerror};\n\n"
               "KILN_EXPORT const kiln_aot_model *%s_describe(void) { return &kiln_model; }\n"
               "/* For dlsym: the same name in every Kiln library (the header declares none). */\n"
               "KILN_EXPORT const kiln_aot_model *kiln_aot_describe(void) { return &kiln_model; }\n",
            p->n_inputs, p->n_outputs, p->n_kernels, (long long)p->arena_bytes, prefix, prefix);
}

/* ------------------------------------------------------------------ files and linking */
static kiln_status write_file(const char *path, const kiln_strbuf *b, kiln_diag *d) {
  if (b->oom) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory generating %s", path);
  FILE *f = fopen(path, "wb");
  if (!f) return kiln_diag_set(d, KILN_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  bool ok = fwrite(b->s, 1, b->len, f) == b->len;
  ok = (fclose(f) == 0) && ok;
  return ok ? KILN_OK : kiln_diag_set(d, KILN_ERR_IO, "cannot write %s", path);
}

/* Single-quoted for the shell. */
static void shell_quote(kiln_strbuf *b, const char *s) {
  kiln_strbuf_printf(b, "'");
  for (; *s; s++) {
    if (*s == '\'') kiln_strbuf_printf(b, "'\\''");
    else kiln_strbuf_printf(b, "%c", *s);
  }
  kiln_strbuf_printf(b, "' ");
}

static kiln_status link_library(const kiln_llvm_aot_options *o, const char *obj, const char *glue,
                                const kiln_allocator *a, kiln_diag *d) {
  kiln_strbuf cmd = {.a = a};
  kiln_strbuf_printf(&cmd, "%s -shared -fPIC -O2 -fvisibility=hidden -o ", o->cc ? o->cc : "cc");
  shell_quote(&cmd, o->so_path);
  shell_quote(&cmd, obj);
  shell_quote(&cmd, glue);
  if (o->aotrt_lib) shell_quote(&cmd, o->aotrt_lib);
  kiln_strbuf_printf(&cmd, "%s -lm 2>&1", o->link_flags ? o->link_flags : "");
  if (cmd.oom) {
    kiln_ir_free(a, cmd.s);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory building the link command");
  }
  FILE *pipe = popen(cmd.s, "r");
  if (!pipe) {
    kiln_diag_set(d, KILN_ERR_BACKEND, "cannot run the linker: %s", cmd.s);
    kiln_ir_free(a, cmd.s);
    return d->status;
  }
  char log[1536];
  size_t n = fread(log, 1, sizeof log - 1, pipe);
  log[n] = 0;
  char sink[512];
  while (fread(sink, 1, sizeof sink, pipe) > 0) {
  }
  int rc = pclose(pipe);
  kiln_status st = KILN_OK;
  if (rc != 0) st = kiln_diag_set(d, KILN_ERR_BACKEND, "linking %s failed (%s):\n%s", o->so_path, cmd.s, log);
  kiln_ir_free(a, cmd.s);
  return st;
}

static kiln_status emit_object(const kiln_kprogram *p, const kiln_llvm_aot_options *o, const char *obj,
                               kiln_diag *d) {
  const char *prefix = o->prefix;
  LLVMTargetMachineRef tm;
  if (kiln_llvm_target_machine(o->triple, o->cpu, LLVMRelocPIC, LLVMCodeModelDefault, &tm, d) != KILN_OK)
    return d->status;
  char entry[320];
  snprintf(entry, sizeof entry, "%s_kiln_main", prefix);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = NULL;
  kiln_llvm_render_options ro = {.entry_name = entry, .embed_consts = true, .hidden_entry = true};
  kiln_llvm_target_features(tm, &ro);
  kiln_status st = kiln_llvm_render(p, ctx, &ro, &m, d);
  if (st == KILN_OK) st = kiln_llvm_optimize(m, tm, d);
  if (st == KILN_OK) {
    char *err = NULL;
    /* A file LLVM cannot write (the folder is missing or read-only) is the user's
     * to fix and says so in one line; the module text would only bury it. */
    if (LLVMTargetMachineEmitToFile(tm, m, obj, LLVMObjectFile, &err))
      st = kiln_diag_set(d, KILN_ERR_IO, "cannot write %s: %s", obj, err ? err : "");
    LLVMDisposeMessage(err);
  }
  if (m) LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return st;
}

kiln_status kiln_llvm_export(const kiln_kprogram *p, const kiln_llvm_aot_options *o, kiln_diag *d) {
  char why[256];
  if (!o || !o->so_path) return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "export: no output path");
  if (!kiln_llvm_check_prefix(o->prefix, why, sizeof why))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "export: prefix '%s' %s", o->prefix ? o->prefix : "(null)", why);
  const kiln_allocator *a = p->alloc;
  /* Temporary files next to the output, unique per process. */
  size_t len = strlen(o->so_path) + 64;
  char *obj = kiln_ir_malloc(a, len), *glue = kiln_ir_malloc(a, len);
  pname *names = kiln_ir_malloc(a, sizeof(pname) * (size_t)(p->n_inputs + p->n_outputs + 1));
  if (!obj || !glue || !names) {
    kiln_ir_free(a, names);
    kiln_ir_free(a, obj);
    kiln_ir_free(a, glue);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  param_names(p, names);
  snprintf(obj, len, "%s.kiln%ld.o", o->so_path, (long)getpid());
  snprintf(glue, len, "%s.kiln%ld.c", o->so_path, (long)getpid());
  kiln_strbuf hdr = {.a = a}, gl = {.a = a};
  /* Whether the output's folder takes files, before the long part: one line naming it. */
  kiln_status st = KILN_OK;
  FILE *probe = fopen(glue, "wb");
  if (!probe) st = kiln_diag_set(d, KILN_ERR_IO, "cannot write %s: %s", o->so_path, strerror(errno));
  else fclose(probe);
  if (st == KILN_OK) st = emit_object(p, o, obj, d);
  if (st == KILN_OK) {
    kiln_progress_report(&o->progress, "wrote the object of %d kernels", (int)p->n_kernels);
    write_glue(&gl, p, names, o->prefix);
    st = write_file(glue, &gl, d);
  }
  if (st == KILN_OK) st = link_library(o, obj, glue, a, d);
  if (st == KILN_OK) kiln_progress_report(&o->progress, "linked %s", o->so_path);
  if (st == KILN_OK && o->header_path) {
    write_header(&hdr, p, names, o->prefix);
    st = write_file(o->header_path, &hdr, d);
  }
  remove(obj);
  remove(glue);
  kiln_ir_free(a, obj);
  kiln_ir_free(a, glue);
  kiln_ir_free(a, names);
  kiln_ir_free(a, hdr.s);
  kiln_ir_free(a, gl.s);
  return st;
}
