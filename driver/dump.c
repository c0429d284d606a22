/* dump.c - kiln dump: the graph after a pass, the kernel program, the LLVM module or the
 * CUDA C of a model, and the fusion report (every kernel with its sources, category,
 * domain and costs, and every fusion the lowering refused; docs/fusion-report.md). */
#include "driver.h"

#include <stdlib.h>
#include <string.h>
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

/* ------------------------------------------------------------------ fusion report */
static const char *fusion_name(kiln_fusion_level f) {
  switch (f) {
  case KILN_FUSION_FULL: return "full";
  case KILN_FUSION_ELEMENTWISE: return "elementwise";
  case KILN_FUSION_NONE: return "none";
  }
  return "?";
}


/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes there are not one. */
static int utf8_len(const unsigned char *s) {
  int n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
  for (int i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  return n;
}

/* s as a JSON string: quotes, backslashes and control characters escaped; bytes that are
 * not UTF-8 (a node name is whatever the model file holds) become U+FFFD, so the output
 * always parses. NULL is "". */
/* Whether kernel k's source j names a model node an earlier source already named: one
 * model node may lower to several graph nodes (an ONNX Gemm: matmul, scale, add), and the
 * report lists each model node once. */
static bool repeated_source(const kiln_kernel *k, int32_t j) {
  const char *a = k->sources[j] ? k->sources[j] : "";
  for (int32_t i = 0; i < j; i++)
    if (strcmp(a, k->sources[i] ? k->sources[i] : "") == 0) return true;
  return false;
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c;) {
    if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
    else if (*c == '\n') fputs("\\n", f);
    else if (*c == '\t') fputs("\\t", f);
    else if (*c == '\r') fputs("\\r", f);
    else if (*c < 0x20 || *c == 0x7f) fprintf(f, "\\u%04x", *c);
    else if (*c < 0x80) fputc(*c, f);
    else {
      int n = utf8_len(c);
      if (n == 0) {
        fputs("\\ufffd", f);
        c++;
      } else {
        fwrite(c, 1, (size_t)n, f);
        c += n;
      }
      continue;
    }
    c++;
  }
  fputc('"', f);
}

/* Extents of the kernel's reduction loops: a LOOP kernel's variables past its output
 * rank; a GEMM's k. */
static int32_t reduce_extents(const kiln_kernel *k, int64_t *out, int32_t cap) {
  int32_t n = 0;
  if (k->kind == KILN_KERNEL_LOOP)
    for (int32_t v = k->out.rank; v < k->n_vars && n < cap; v++) out[n++] = k->extent ? k->extent[v] : 0;
  else if (k->kind == KILN_KERNEL_GEMM && cap > 0)
    out[n++] = k->gemm.k;
  return n;
}

static void json_dims(FILE *f, const int64_t *d, int32_t n) {
  fputc('[', f);
  for (int32_t i = 0; i < n; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)d[i]);
  fputc(']', f);
}

static void report_json(const kiln_kprogram *p, const char *model, kiln_fusion_level fusion, kiln_target target,
                        FILE *f) {
  kiln_kernel_stats tot;
  kiln_ir_kprogram_totals(p, &tot);
  fprintf(f, "{\n  \"version\": 1,\n  \"model\": ");
  json_str(f, model);
  fprintf(f, ",\n  \"fusion\": \"%s\",\n  \"target\": \"%s\",\n  \"kernels\": [", fusion_name(fusion),
          target == KILN_TARGET_CUDA ? "cuda" : "cpu");
  for (int32_t i = 0; i < p->n_kernels; i++) {
    const kiln_kernel *k = &p->kernels[i];
    kiln_kernel_stats s;
    kiln_ir_kernel_stats(p, k, &s);
    fprintf(f, "%s\n    {\"index\": %d, \"name\": ", i ? "," : "", (int)i);
    json_str(f, k->name);
    fprintf(f, ", \"kind\": \"%s\", \"category\": \"%s\", \"dtype\": \"%s\", \"sources\": [", kiln_ir_kernel_kind_name(k->kind),
            kiln_category_name(k->category), kiln_dtype_name(k->out_dtype));
    for (int32_t j = 0, n = 0; j < k->n_sources && k->sources; j++) {
      if (repeated_source(k, j)) continue;
      if (n++) fputs(", ", f);
      json_str(f, k->sources[j]);
    }
    fputs("], \"domain\": ", f);
    json_dims(f, k->out.dims, k->out.rank);
    int64_t red[64];
    fputs(", \"reduce\": ", f);
    json_dims(f, red, reduce_extents(k, red, 64));
    fprintf(f, ", \"bytes_read\": %lld, \"bytes_written\": %lld, \"flops\": %lld, \"fused\": [",
            (long long)s.bytes_read, (long long)s.bytes_written, (long long)s.flops);
    int n_fused = 0;
    if (k->kind == KILN_KERNEL_GEMM && k->pack) fprintf(f, "%s\"pack\"", n_fused++ ? ", " : "");
    if (k->kind == KILN_KERNEL_GEMM && k->epilogue) fprintf(f, "%s\"epilogue\"", n_fused++ ? ", " : "");
    if (k->with_next) fprintf(f, "%s\"with_next\"", n_fused++ ? ", " : "");
    fputs("]}", f);
  }
  fprintf(f, "%s],\n  \"refused\": [", p->n_kernels ? "\n  " : "");
  for (int32_t i = 0; i < p->n_refused && p->refused; i++) {
    const kiln_fusion_refusal *r = &p->refused[i];
    fprintf(f, "%s\n    {\"producer\": ", i ? "," : "");
    json_str(f, r->producer);
    fputs(", \"consumer\": ", f);
    json_str(f, r->consumer);
    fputs(", \"reason\": ", f);
    json_str(f, r->reason);
    fputc('}', f);
  }
  fprintf(f, "%s],\n", p->n_refused > 0 && p->refused ? "\n  " : "");
  fprintf(f,
          "  \"totals\": {\"kernels\": %d, \"bytes_read\": %lld, \"bytes_written\": %lld, \"bytes_moved\": %lld, "
          "\"flops\": %lld},\n",
          (int)p->n_kernels, (long long)tot.bytes_read, (long long)tot.bytes_written,
          (long long)(tot.bytes_read + tot.bytes_written), (long long)tot.flops);
  fprintf(f, "  \"arena_bytes\": %lld\n}\n", (long long)p->arena_bytes);
}

static void text_dims(char *buf, size_t n, const int64_t *d, int32_t rank) {
  size_t j = (size_t)snprintf(buf, n, "[");
  for (int32_t i = 0; i < rank && j < n; i++) j += (size_t)snprintf(buf + j, n - j, "%s%lld", i ? "," : "", (long long)d[i]);
  if (j < n) snprintf(buf + j, n - j, "]");
}

static void report_text(const kiln_kprogram *p, const char *model, kiln_fusion_level fusion, kiln_target target,
                        FILE *f) {
  kiln_kernel_stats tot;
  kiln_ir_kprogram_totals(p, &tot);
  fprintf(f, "fusion report for '%s' (fusion %s, target %s): %d kernels, %.4g MB moved, %.4g MFLOP, arena %.4g MB\n",
          model ? model : "", fusion_name(fusion), target == KILN_TARGET_CUDA ? "cuda" : "cpu", (int)p->n_kernels,
          (double)(tot.bytes_read + tot.bytes_written) / 1e6, (double)tot.flops / 1e6, (double)p->arena_bytes / 1e6);
  for (int32_t i = 0; i < p->n_kernels; i++) {
    const kiln_kernel *k = &p->kernels[i];
    kiln_kernel_stats s;
    kiln_ir_kernel_stats(p, k, &s);
    char dom[256], red[256] = "";
    text_dims(dom, sizeof dom, k->out.dims, k->out.rank);
    int64_t r[64];
    int32_t nr = reduce_extents(k, r, 64);
    if (nr > 0) {
      strcpy(red, " x ");
      text_dims(red + 3, sizeof red - 3, r, nr);
    }
    char where[600];
    snprintf(where, sizeof where, "%s%s", dom, red);
    fprintf(f, "  k%-3d %-12s %-6s %-22s %10.4g MB %10.4g MFLOP  %s", (int)i, kiln_category_name(k->category),
            kiln_ir_kernel_kind_name(k->kind), where, (double)(s.bytes_read + s.bytes_written) / 1e6, (double)s.flops / 1e6,
            k->name ? k->name : "");
    if (k->kind == KILN_KERNEL_GEMM && k->pack) fputs(" +pack", f);
    if (k->kind == KILN_KERNEL_GEMM && k->epilogue) fputs(" +epilogue", f);
    if (k->with_next) fputs(" +with-next", f);
    fputs(" <-", f);
    for (int32_t j = 0, n = 0; j < k->n_sources && k->sources; j++)
      if (!repeated_source(k, j)) fprintf(f, "%s%s", n++ ? ", " : " ", k->sources[j] ? k->sources[j] : "?");
    fputc('\n', f);
  }
  fprintf(f, "refused (%d)%s\n", (int)p->n_refused, p->n_refused > 0 ? ":" : "");
  for (int32_t i = 0; i < p->n_refused && p->refused; i++) {
    const kiln_fusion_refusal *r = &p->refused[i];
    fprintf(f, "  %s -> %s: %s\n", r->producer ? r->producer : "?", r->consumer ? r->consumer : "?",
            r->reason ? r->reason : "");
  }
}

kiln_status kiln_driver_fusion_report(const kiln_kprogram *p, const char *model, kiln_fusion_level fusion,
                                      kiln_target target, kiln_report_format fmt, FILE *f) {
  if (fmt == KILN_REPORT_JSON) report_json(p, model, fusion, target, f);
  else if (fmt == KILN_REPORT_TEXT) report_text(p, model, fusion, target, f);
  return ferror(f) ? KILN_ERR_IO : KILN_OK;
}

/* ------------------------------------------------------------------ dump */
kiln_status kiln_driver_dump(kiln_context *ctx, const kiln_graph *g, const kiln_dump_options *o,
                             FILE *f) {
  kiln_print_options po = {.elide_constants = o->elide_constants};
  if (!o->print_after && !o->kernels && !o->llvm && !o->cuda && !o->fusion_report && !o->fusion_plan) {
    if (kiln_ir_print(g, f, &po) != KILN_OK) return kiln_driver_failf(ctx, KILN_ERR_IO, "cannot print the graph");
    return KILN_OK;
  }
  kiln_compile_options co = {0};
  co.fusion = o->fusion;
  co.disable_passes = o->disable_passes;
  co.print_after = o->print_after;
  co.target = o->cuda || o->target == KILN_TARGET_CUDA ? KILN_TARGET_CUDA : KILN_TARGET_CPU;
  kiln_kprogram *p = NULL;
  kiln_graph *lowered = NULL;
  kiln_fusion_plan *plan = NULL;
  kiln_status st = kiln_driver_lower_plan(ctx, g, &co, f, &p, o->fusion_plan ? &lowered : NULL,
                                          o->fusion_plan ? &plan : NULL);
  if (st != KILN_OK) return st;
  kiln_diag d = {0};
  if (plan) kiln_pass_plan_print(plan, f);
  kiln_pass_plan_destroy(plan);
  kiln_ir_graph_destroy(lowered);
  if (o->kernels) kiln_ir_kprogram_print(p, f);
  if (o->fusion_report && kiln_driver_fusion_report(p, o->model ? o->model : g->name, o->fusion, co.target,
                                                    o->fusion_report, f) != KILN_OK)
    st = kiln_diag_set(&d, KILN_ERR_IO, "cannot write the fusion report");
  if (st == KILN_OK && o->llvm) {
#ifdef KILN_HAVE_LLVM
    st = kiln_llvm_print_module(p, f, &d);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without LLVM");
#endif
  }
  if (st == KILN_OK && o->cuda) {
#ifdef KILN_HAVE_CUDA
    char *src = NULL;
    st = kiln_cuda_render(p, &src, &d);
    if (st == KILN_OK) fputs(src, f);
    kiln_ir_free(p->alloc, src);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without CUDA support");
#endif
  }
  kiln_ir_kprogram_destroy(p);
  return st == KILN_OK ? KILN_OK : kiln_driver_fail(ctx, &d);
}


/* ------------------------------------------------------------------ the report as a string */
kiln_status kiln_fusion_report(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, int json,
                               char **report) {
  if (!ctx || !g || !report) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_fusion_report: NULL argument");
  *report = NULL;
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  if (!f) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "kiln_fusion_report: out of memory");
  kiln_dump_options d = {.fusion = o ? o->fusion : KILN_FUSION_FULL,
                         .disable_passes = o ? o->disable_passes : NULL,
                         .fusion_report = json ? KILN_REPORT_JSON : KILN_REPORT_TEXT,
                         .target = o ? o->target : KILN_TARGET_CPU};
  kiln_status st = kiln_driver_dump(ctx, g, &d, f);
  bool closed = fclose(f) == 0;
  /* open_memstream's buffer comes from malloc; the caller frees with kiln_free. */
  if (st == KILN_OK && closed) {
    *report = kiln_ir_malloc(&ctx->alloc, n + 1);
    if (*report) memcpy(*report, buf, n + 1);
    else st = kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "kiln_fusion_report: out of memory");
  } else if (st == KILN_OK) {
    st = kiln_driver_failf(ctx, KILN_ERR_IO, "kiln_fusion_report: cannot write the report");
  }
  free(buf);
  return st;
}
