/* load.c - loading models: ONNX files (frontend/, with the interpreter as the fold engine
 * for shape computations) and Kiln's textual IR. */
#include "driver.h"
#include "../frontend/onnx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static kiln_status fold_with_interpreter(void *user, kiln_graph *g, int32_t v, int32_t *out,
                                         kiln_diag *d) {
  (void)user;
  return kiln_rt_fold_value(g, v, out, d);
}

/* A shared library (what kiln compile writes) or another ELF file where a model was
 * expected: say what it is, instead of a parse error at its first byte. */
static bool is_elf(const char *path) {
  unsigned char magic[4] = {0};
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  bool elf = fread(magic, 1, 4, f) == 4 && memcmp(magic, "\177ELF", 4) == 0;
  fclose(f);
  return elf;
}

static kiln_status elf_error(kiln_context *ctx, const char *path, const char *want) {
  return kiln_driver_failf(ctx, KILN_ERR_PARSE,
                           "%s: an ELF file (a shared library, such as a model library from kiln compile, or a "
                           "program), not %s; kiln_load_library (kiln run, kiln info, kiln bench) runs model libraries",
                           path, want);
}

/* The load options' constant inputs as the frontend's frozen constants (at most 64). */
static kiln_status frozen_inputs(kiln_context *ctx, const char *fn, const kiln_load_options *o,
                                 kiln_const frozen[64], kiln_fe_options *fo) {
  if (!o || o->n_constant_inputs <= 0) return KILN_OK;
  if (o->n_constant_inputs > 64 || !o->constant_input_names || !o->constant_input_values)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "%s: constant inputs: %d given (at most 64, names and values required)", fn,
                             o->n_constant_inputs);
  for (int i = 0; i < o->n_constant_inputs; i++) {
    const kiln_tensor *t = &o->constant_input_values[i];
    if (t->rank < 0 || t->rank > KILN_MAX_RANK || (unsigned)t->dtype >= KILN_DTYPE_COUNT)
      return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "constant input '%s': bad dtype or rank",
                               o->constant_input_names[i]);
    frozen[i].dtype = t->dtype;
    frozen[i].shape = kiln_shape_make(t->rank, t->dims);
    frozen[i].data = t->data;
    frozen[i].nbytes = (size_t)kiln_shape_numel(&frozen[i].shape) * kiln_dtype_size(t->dtype);
    frozen[i].name = o->constant_input_names[i];
  }
  fo->n_frozen = o->n_constant_inputs;
  fo->frozen = frozen;
  return KILN_OK;
}

/* kiln_load_onnx from a file (path) or from memory (path NULL). */
static kiln_status load_onnx(kiln_context *ctx, const char *path, const void *data, size_t n,
                             const kiln_load_options *o, kiln_graph **g) {
  const char *fn = path ? "kiln_load_onnx" : "kiln_load_onnx_bytes";
  if (!ctx || !g || (!path && !data))
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
  *g = NULL;
  if (path && is_elf(path)) return elf_error(ctx, path, "an ONNX model");
  kiln_diag d = {0};
  kiln_fe_options fo = {.load = o, .fold = fold_with_interpreter, .fold_user = NULL};
  kiln_const frozen[64];
  kiln_status st = frozen_inputs(ctx, fn, o, frozen, &fo);
  if (st != KILN_OK) return st;
  /* From memory there is no folder: external data is refused (frontend/onnx_tensor.c). */
  st = path ? kiln_fe_load_onnx(&ctx->alloc, path, &fo, g, &d)
            : kiln_fe_load_onnx_buffer(&ctx->alloc, data, n, NULL, &fo, g, &d);
  if (st != KILN_OK) {
    kiln_ir_graph_destroy(*g);
    *g = NULL;
    return kiln_driver_fail(ctx, &d);
  }
  kiln_driver_ctx_retain(ctx);
  return KILN_OK;
}

kiln_status kiln_load_onnx(kiln_context *ctx, const char *path, const kiln_load_options *o,
                           kiln_graph **g) {
  if (!path) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_load_onnx: NULL argument");
  return load_onnx(ctx, path, NULL, 0, o, g);
}

kiln_status kiln_load_onnx_bytes(kiln_context *ctx, const void *data, size_t n, const kiln_load_options *o,
                                 kiln_graph **out) {
  return load_onnx(ctx, NULL, data, n, o, out);
}

kiln_status kiln_parse_text(kiln_context *ctx, const char *text, kiln_graph **g) {
  if (!ctx || !text || !g) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_parse_text: NULL argument");
  kiln_diag d = {0};
  if (kiln_ir_parse(&ctx->alloc, text, "<text>", g, &d) != KILN_OK) return kiln_driver_fail(ctx, &d);
  kiln_driver_ctx_retain(ctx);
  return KILN_OK;
}

kiln_status kiln_load_text(kiln_context *ctx, const char *path, kiln_graph **g) {
  if (!ctx || !path || !g) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_load_text: NULL argument");
  *g = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: cannot open file: %s", path, strerror(errno));
  /* A folder opens too, and then reports a size of LONG_MAX: only regular files. */
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: not a regular file", path);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? kiln_ir_malloc(&ctx->alloc, (size_t)n + 1) : NULL;
  if (!buf) {
    fclose(f);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory reading file", path);
  }
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  buf[got] = 0;
  if (got >= 4 && memcmp(buf, "\177ELF", 4) == 0) {
    kiln_ir_free(&ctx->alloc, buf);
    return elf_error(ctx, path, "Kiln IR text");
  }
  kiln_diag d = {0};
  kiln_status st = kiln_ir_parse(&ctx->alloc, buf, path, g, &d);
  kiln_ir_free(&ctx->alloc, buf);
  if (st != KILN_OK) return kiln_driver_fail(ctx, &d);
  kiln_driver_ctx_retain(ctx);
  return KILN_OK;
}
