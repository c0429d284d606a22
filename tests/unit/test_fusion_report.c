/* test_fusion_report.c - the fusion report (driver/dump.c) on a hand-built program: the
 * JSON escapes whatever a node name holds (quotes, backslashes, control characters,
 * bytes that are not UTF-8) and lists the refused fusions; the text form names them;
 * totals are the sums of kiln_ir_kernel_stats. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../driver/driver.h"

/* y[i] = neg(x[i]) over f32[4]: b0 input, b1 output. */
static kiln_kprogram *neg_program(void) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  p->name = "neg";
  p->n_inputs = p->n_outputs = 1;
  p->n_buffers = 2;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * 2);
  p->buffers[0] = (kiln_buffer){.kind = KILN_BUF_INPUT, .dtype = KILN_F32, .shape = {1, {4}}, .nbytes = 16};
  p->buffers[1] = (kiln_buffer){.kind = KILN_BUF_OUTPUT, .dtype = KILN_F32, .shape = {1, {4}}, .nbytes = 16};
  p->n_kernels = 1;
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  kiln_kernel *k = &p->kernels[0];
  k->kind = KILN_KERNEL_LOOP;
  k->name = "k0_neg";
  static const char *srcs[] = {"a\"b\\c\n\x01", "caf\xc3\xa9", "bad\xff"};
  k->n_sources = 3;
  k->sources = srcs;
  k->category = KILN_CAT_ELEMENTWISE;
  k->out_buf = 1;
  k->out_dtype = KILN_F32;
  k->out = (kiln_shape){1, {4}};
  k->n_vars = 1;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t));
  k->extent[0] = 4;
  k->n_kx = 3;
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * 3);
  k->kx[0] = (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = 0, .a = {-1, -1, -1}};
  k->kx[1] = (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_F32, .buf = 0, .a = {0, -1, -1}};
  k->kx[2] = (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_F32, .op = KILN_OP_neg, .a = {1, -1, -1}};
  k->root = 2;
  p->n_refused = 2;
  p->refused = kiln_arena_alloc(p->arena, sizeof(kiln_fusion_refusal) * 2);
  p->refused[0] = (kiln_fusion_refusal){"p\"1", "c\\2", "producer has 3 consumers and costs 40 flop/element"};
  p->refused[1] = (kiln_fusion_refusal){"x", "y", NULL};
  return p;
}

static char *report(const kiln_kprogram *p, kiln_report_format fmt) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  cr_assert_eq(kiln_driver_fusion_report(p, "m\"odel", KILN_FUSION_ELEMENTWISE, KILN_TARGET_CPU, fmt, f), KILN_OK);
  fclose(f);
  return buf;
}

Test(fusion_report, json_escapes_names_and_lists_refusals) {
  kiln_kprogram *p = neg_program();
  char *j = report(p, KILN_REPORT_JSON);
  cr_expect(strstr(j, "\"model\": \"m\\\"odel\""), "%s", j);
  cr_expect(strstr(j, "\"fusion\": \"elementwise\""), "%s", j);
  cr_expect(strstr(j, "\"sources\": [\"a\\\"b\\\\c\\n\\u0001\", \"caf\xc3\xa9\", \"bad\\ufffd\"]"), "%s", j);
  cr_expect(strstr(j, "\"category\": \"elementwise\""), "%s", j);
  cr_expect(strstr(j, "\"domain\": [4], \"reduce\": [], \"bytes_read\": 16, \"bytes_written\": 16, \"flops\": 4"), "%s", j);
  cr_expect(strstr(j, "{\"producer\": \"p\\\"1\", \"consumer\": \"c\\\\2\", \"reason\": \"producer has 3 consumers"), "%s", j);
  cr_expect(strstr(j, "{\"producer\": \"x\", \"consumer\": \"y\", \"reason\": \"\"}"), "%s", j);
  cr_expect(strstr(j, "\"totals\": {\"kernels\": 1, \"bytes_read\": 16, \"bytes_written\": 16, \"bytes_moved\": 32, "
                      "\"flops\": 4}"), "%s", j);
  for (const char *c = j; *c; c++) cr_expect((unsigned char)*c >= 0x20 || *c == '\n', "raw control byte in %s", j);
  free(j);
  kiln_ir_kprogram_destroy(p);
}

Test(fusion_report, text_names_kernels_and_refusals) {
  kiln_kprogram *p = neg_program();
  char *t = report(p, KILN_REPORT_TEXT);
  cr_expect(strstr(t, "1 kernels, 3.2e-05 MB moved"), "%s", t);
  cr_expect(strstr(t, "  k0   elementwise  loop   [4]"), "%s", t);
  cr_expect(strstr(t, "k0_neg <- a\"b"), "%s", t);
  cr_expect(strstr(t, "refused (2):\n  p\"1 -> c\\2: producer has 3 consumers and costs 40 flop/element\n"), "%s", t);
  free(t);
  kiln_ir_kprogram_destroy(p);
}

Test(fusion_report, totals_sum_kernel_stats) {
  kiln_kprogram *p = neg_program();
  kiln_kernel_stats s, t;
  kiln_ir_kernel_stats(p, &p->kernels[0], &s);
  kiln_ir_kprogram_totals(p, &t);
  cr_expect_eq(t.bytes_read, s.bytes_read);
  cr_expect_eq(t.bytes_written, s.bytes_written);
  cr_expect_eq(t.flops, 4);
  kiln_ir_kprogram_destroy(p);
}

/* One model node lowered to several graph nodes (an ONNX Gemm: matmul, scale, add) is one
 * source: each name is listed once, at its first appearance, in both forms. */
Test(fusion_report, sources_listed_once) {
  kiln_kprogram *p = neg_program();
  static const char *srcs[] = {"gemm", "x", "gemm", NULL, "x", NULL, "relu"};
  p->kernels[0].n_sources = 7;
  p->kernels[0].sources = srcs;
  char *j = report(p, KILN_REPORT_JSON), *t = report(p, KILN_REPORT_TEXT);
  cr_expect(strstr(j, "\"sources\": [\"gemm\", \"x\", \"\", \"relu\"]"), "%s", j);
  cr_expect(strstr(t, "k0_neg <- gemm, x, ?, relu\n"), "%s", t);
  free(j);
  free(t);
  kiln_ir_kprogram_destroy(p);
}
