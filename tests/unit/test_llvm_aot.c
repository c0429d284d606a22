/* test_llvm_aot.c - kiln_llvm_export: a tiny program (input, embedded constant, arena
 * temporary, two kernels) becomes a shared library plus header; a C program compiled
 * against the header runs it, and dlopen + kiln_aot_describe sees its interface. A named
 * CPU (the x86-64 baseline) gives a library that runs and uses no AVX; an unknown CPU or
 * triple is an invalid argument naming it. */
#include "test_llvm_helpers.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

/* Sanitizer builds compile the AOT runtime with sanitizers: its users must link them. */
#ifdef __SANITIZE_ADDRESS__
#define SAN_FLAGS " -fsanitize=address,undefined"
#else
#define SAN_FLAGS ""
#endif

/* y[i] = sum_j (x[i,j] * w[j]) + 1 ; z = bool(y > 3) ; x [2,3] f32, w [3] const */
static kiln_kprogram *tiny_program(void) {
  kiln_kprogram *p = tp_new();
  p->name = "tiny model";
  int64_t xd[2] = {2, 3}, wd[1] = {3}, yd[1] = {2};
  static const float w[3] = {1.0f, 10.0f, 100.0f};
  p->n_consts = 1;
  p->consts = kiln_arena_alloc(p->arena, sizeof(kiln_const));
  p->consts[0] = (kiln_const){.dtype = KILN_F32, .shape = kiln_shape_make(1, wd), .data = (void *)w,
                              .nbytes = sizeof w, .name = "w"};
  p->n_inputs = 1;
  p->n_outputs = 2;
  p->inputs = kiln_arena_alloc(p->arena, sizeof(kiln_graph_io));
  p->outputs = kiln_arena_alloc(p->arena, 2 * sizeof(kiln_graph_io));
  p->inputs[0].name = "x";
  p->outputs[0].name = "y.out"; /* not an identifier: the parameter is sanitized */
  p->outputs[1].name = "int";   /* a C keyword */
  p->in_dtypes = kiln_arena_alloc(p->arena, sizeof(kiln_dtype));
  p->out_dtypes = kiln_arena_alloc(p->arena, 2 * sizeof(kiln_dtype));
  p->in_shapes = kiln_arena_alloc(p->arena, sizeof(kiln_shape));
  p->out_shapes = kiln_arena_alloc(p->arena, 2 * sizeof(kiln_shape));
  p->in_dtypes[0] = KILN_F32;
  p->in_shapes[0] = kiln_shape_make(2, xd);
  p->out_dtypes[0] = KILN_F32;
  p->out_shapes[0] = kiln_shape_make(1, yd);
  p->out_dtypes[1] = KILN_BOOL;
  p->out_shapes[1] = kiln_shape_make(1, yd);

  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, xd, 0);
  int32_t W = tp_buffer(p, KILN_BUF_CONST, KILN_F32, 1, wd, 0);
  int32_t T = tp_buffer(p, KILN_BUF_ARENA, KILN_F32, 2, xd, 0);
  p->buffers[T].offset = 64;
  p->arena_bytes = 64 + 6 * sizeof(float);
  int32_t Y = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, yd, 0);
  int32_t Z = tp_buffer(p, KILN_BUF_OUTPUT, KILN_BOOL, 1, yd, 1);
  /* t = x * w (broadcast) */
  kiln_kernel *k0 = tp_loop(p, T, 0, NULL);
  int32_t v2[2] = {0, 1};
  int64_t s2[2] = {3, 1};
  int32_t lx = kx_load(k0, p, X, kx_offset(k0, 2, v2, s2));
  int32_t lw = kx_load(k0, p, W, kx_var(k0, 1));
  kx_alu(k0, KILN_OP_mul, KILN_F32, lx, lw, -1);
  /* y = sum_j t + 1 */
  int64_t red[1] = {3};
  kiln_kernel *k1 = tp_loop(p, Y, 1, red);
  int32_t vr[2] = {0, 1};
  int32_t lt = kx_load(k1, p, T, kx_offset(k1, 2, vr, s2));
  int32_t s = kx_reduce(k1, KILN_OP_reduce_sum, KILN_F32, 1, 1, lt, 0);
  kx_alu(k1, KILN_OP_add, KILN_F32, s, kx_f(k1, KILN_F32, 1.0), -1);
  /* z = y > 300 */
  kiln_kernel *k2 = tp_loop(p, Z, 0, NULL);
  int32_t ly = kx_load(k2, p, Y, kx_var(k2, 0));
  kx_alu(k2, KILN_OP_gt, KILN_BOOL, ly, kx_f(k2, KILN_F32, 300.0), -1);
  return p;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

Test(llvm_aot, export_header_program_and_describe) {
  char dir[] = "/tmp/kiln_aot_XXXXXX";
  cr_assert(mkdtemp(dir));
  char so[256], hdr[256], mainc[256], exe[256], outp[256], cmd[2048];
  snprintf(so, sizeof so, "%s/libtiny.so", dir);
  snprintf(hdr, sizeof hdr, "%s/tiny.h", dir);
  snprintf(mainc, sizeof mainc, "%s/main.c", dir);
  snprintf(exe, sizeof exe, "%s/main", dir);
  snprintf(outp, sizeof outp, "%s/out.txt", dir);

  kiln_kprogram *p = tiny_program();
  kiln_llvm_aot_options o = {.prefix = "tiny", .so_path = so, .header_path = hdr, .aotrt_lib = KILN_AOTRT_PATH,
                             .link_flags = "-lopenblas -lm -lpthread -ldl" SAN_FLAGS};
  kiln_diag d = {0};
  tp_schedule(p);
  kiln_status st = kiln_llvm_export(p, &o, &d);
  cr_assert_eq(st, KILN_OK, "export: %s", d.msg);

  const char *h = slurp(hdr);
  cr_expect(strstr(h, "int tiny_create(tiny **m, const tiny_options *opt);"), "header:\n%s", h);
  cr_expect(strstr(h, "const float *x"), "no typed input in header:\n%s", h);
  cr_expect(strstr(h, "float *y_out"), "output name not sanitized:\n%s", h);
  cr_expect(strstr(h, "uint8_t *int_1"), "keyword output not renamed:\n%s", h);
  cr_expect(strstr(h, "[2,3]") && strstr(h, "kiln_aot_describe") && strstr(h, "KILN_AOT_MODEL_DEFINED"), "%s", h);

  FILE *f = fopen(mainc, "w");
  cr_assert(f);
  fputs("#include <stdio.h>\n#include \"tiny.h\"\n"
        "int main(void) {\n"
        "  tiny *m;\n  tiny_options opt = {2};\n"
        "  if (tiny_create(&m, &opt) != 0) return 1;\n"
        "  float x[6] = {1, 2, 3, 0.5f, 0.25f, 0.125f}, y[2];\n  uint8_t z[2];\n"
        "  if (tiny_run(m, x, y, z) != 0) return 2;\n"
        "  if (tiny_run(m, x, NULL, z) != 1) return 3;\n"
        "  printf(\"%g %g %d %d %s\\n\", y[0], y[1], z[0], z[1], tiny_strerror(2));\n"
        "  tiny_destroy(m);\n  return 0;\n}\n",
        f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "cc -std=c11 -Wall -Werror" SAN_FLAGS " -I%s -o %s %s -L%s -ltiny -Wl,-rpath,%s && %s > %s", dir, exe,
           mainc, dir, dir, exe, outp);
  cr_assert_eq(system(cmd), 0, "command failed: %s", cmd);
  /* the header and rt.h share kiln_aot_model under one guard: both in one file compile */
  snprintf(cmd, sizeof cmd,
           "printf '#include \"runtime/rt.h\"\\n#include \"tiny.h\"\\n' | cc -std=c11 -fsyntax-only -Wall -Werror "
           "-I%s -I%s -I%s/include -x c -",
           dir, KILN_SOURCE_DIR, KILN_SOURCE_DIR);
  cr_expect_eq(system(cmd), 0, "command failed: %s", cmd);
  const char *out = slurp(outp);
  cr_expect_str_eq(out, "322 16.5 1 0 out of memory\n");

  /* generic entry through dlopen */
  void *lib = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  cr_assert(lib, "dlopen: %s", dlerror());
  cr_expect_null(dlsym(lib, "tiny_kiln_main"), "the generated entry must be hidden");
  cr_expect_null(dlsym(lib, "kiln_rt_parallel_for"), "the runtime must be hidden");
  const kiln_aot_model *(*describe)(void) = (const kiln_aot_model *(*)(void))dlsym(lib, "kiln_aot_describe");
  cr_assert(describe);
  const kiln_aot_model *m = describe();
  cr_expect_eq(m->abi_version, KILN_AOT_ABI_VERSION);
  cr_expect_str_eq(m->name, "tiny model");
  cr_assert_eq(m->n_inputs, 1);
  cr_assert_eq(m->n_outputs, 2);
  cr_expect_str_eq(m->inputs[0].name, "x");
  cr_expect_eq(m->inputs[0].dtype, KILN_F32);
  cr_expect_eq(m->inputs[0].rank, 2);
  cr_expect(m->inputs[0].dims[0] == 2 && m->inputs[0].dims[1] == 3);
  cr_expect_str_eq(m->outputs[0].name, "y.out");
  cr_expect_eq(m->outputs[1].dtype, KILN_BOOL);
  cr_expect_eq(m->n_kernels, 3);
  void *model = NULL;
  cr_assert_eq(m->create(&model, 1), 0);
  float x[6] = {1, 1, 1, 2, 2, 2}, y[2] = {0};
  uint8_t z[2] = {9, 9};
  const void *ins[1] = {x};
  void *outs[2] = {y, z};
  cr_expect_eq(m->run(model, ins, outs), 0);
  cr_expect_float_eq(y[0], 112.0f, 1e-5);
  cr_expect_float_eq(y[1], 223.0f, 1e-5);
  cr_expect(z[0] == 0 && z[1] == 0);
  m->destroy(model);
  cr_expect_str_eq(m->strerror(1), "invalid argument (a NULL model or buffer)");
  dlclose(lib);

  /* no temporaries left next to the output */
  snprintf(cmd, sizeof cmd, "ls %s | grep -c kiln > /dev/null", dir);
  cr_expect_neq(system(cmd), 0, "temporary files left in %s", dir);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
  kiln_ir_kprogram_destroy(p);
}

Test(llvm_aot, link_failure_reports_linker_output) {
  char dir[] = "/tmp/kiln_aot_XXXXXX";
  cr_assert(mkdtemp(dir));
  char so[256], cmd[512];
  snprintf(so, sizeof so, "%s/libbad.so", dir);
  kiln_kprogram *p = tiny_program();
  kiln_llvm_aot_options o = {.prefix = "bad", .so_path = so, .aotrt_lib = "/nonexistent/libkiln_aotrt.a"};
  kiln_diag d = {0};
  tp_schedule(p);
  cr_expect_eq(kiln_llvm_export(p, &o, &d), KILN_ERR_BACKEND);
  cr_expect(strstr(d.msg, "linking") && strstr(d.msg, "nonexistent"), "message: %s", d.msg);
  kiln_diag d2 = {0};
  o.prefix = "not an identifier";
  tp_schedule(p);
  cr_expect_eq(kiln_llvm_export(p, &o, &d2), KILN_ERR_INVALID_ARGUMENT);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
  kiln_ir_kprogram_destroy(p);
}

/* y[i] = x[i] * 2 + 1 over 1024 floats: a loop the vectorizer widens to the CPU's
 * vector width (no AVX on the x86-64 baseline, 256-bit on x86-64-v3). */
static kiln_kprogram *wide_program(void) {
  kiln_kprogram *p = tp_new();
  p->name = "wide";
  int64_t n[1] = {1024};
  p->n_inputs = 1;
  p->n_outputs = 1;
  p->inputs = kiln_arena_alloc(p->arena, sizeof(kiln_graph_io));
  p->outputs = kiln_arena_alloc(p->arena, sizeof(kiln_graph_io));
  p->inputs[0].name = "x";
  p->outputs[0].name = "y";
  p->in_dtypes = kiln_arena_alloc(p->arena, sizeof(kiln_dtype));
  p->out_dtypes = kiln_arena_alloc(p->arena, sizeof(kiln_dtype));
  p->in_shapes = kiln_arena_alloc(p->arena, sizeof(kiln_shape));
  p->out_shapes = kiln_arena_alloc(p->arena, sizeof(kiln_shape));
  p->in_dtypes[0] = p->out_dtypes[0] = KILN_F32;
  p->in_shapes[0] = p->out_shapes[0] = kiln_shape_make(1, n);
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, n, 0);
  int32_t Y = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, n, 0);
  kiln_kernel *k = tp_loop(p, Y, 0, NULL);
  int32_t lx = kx_load(k, p, X, kx_var(k, 0));
  int32_t m = kx_alu(k, KILN_OP_mul, KILN_F32, lx, kx_f(k, KILN_F32, 2.0), -1);
  kx_alu(k, KILN_OP_add, KILN_F32, m, kx_f(k, KILN_F32, 1.0), -1);
  return p;
}

/* Lines of the library's disassembly that use a 256- or 512-bit register; -1 without
 * objdump. */
static int wide_vector_lines(const char *so) {
  if (system("command -v objdump > /dev/null 2>&1") != 0) return -1;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "objdump -d --no-show-raw-insn '%s' | grep -cE '%%[yz]mm'", so);
  FILE *f = popen(cmd, "r");
  cr_assert(f);
  int n = -1;
  if (fscanf(f, "%d", &n) != 1) n = -1;
  pclose(f);
  return n;
}

#if defined(__x86_64__)
Test(llvm_aot, named_cpu_baseline_runs_and_uses_no_avx) {
  char dir[] = "/tmp/kiln_aot_XXXXXX";
  cr_assert(mkdtemp(dir));
  char so[256], so3[256], cmd[512];
  snprintf(so, sizeof so, "%s/libwide.so", dir);
  snprintf(so3, sizeof so3, "%s/libwide3.so", dir);
  kiln_kprogram *p = wide_program();
  kiln_llvm_aot_options o = {.prefix = "wide", .so_path = so, .aotrt_lib = KILN_AOTRT_PATH,
                             .link_flags = "-lopenblas -lm -lpthread -ldl" SAN_FLAGS, .cpu = "x86-64"};
  kiln_diag d = {0};
  tp_schedule(p);
  cr_assert_eq(kiln_llvm_export(p, &o, &d), KILN_OK, "export: %s", d.msg);

  void *lib = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  cr_assert(lib, "dlopen: %s", dlerror());
  const kiln_aot_model *(*describe)(void) = (const kiln_aot_model *(*)(void))dlsym(lib, "kiln_aot_describe");
  cr_assert(describe);
  const kiln_aot_model *m = describe();
  void *model = NULL;
  cr_assert_eq(m->create(&model, 2), 0);
  static float x[1024], y[1024];
  for (int i = 0; i < 1024; i++) x[i] = (float)i * 0.5f, y[i] = -1;
  const void *ins[1] = {x};
  void *outs[1] = {y};
  cr_expect_eq(m->run(model, ins, outs), 0);
  for (int i = 0; i < 1024; i++) cr_expect_float_eq(y[i], (float)i + 1.0f, 0, "y[%d] = %g", i, y[i]);
  m->destroy(model);
  dlclose(lib);

  /* The baseline has no AVX registers; the same program for x86-64-v3 does (only
   * disassembled: this machine need not have AVX2). */
  int base = wide_vector_lines(so);
  if (base >= 0) {
    cr_expect_eq(base, 0, "x86-64 code uses ymm/zmm registers");
    o.cpu = "x86-64-v3";
    o.so_path = so3;
    kiln_diag d3 = {0};
    tp_schedule(p);
    cr_assert_eq(kiln_llvm_export(p, &o, &d3), KILN_OK, "export: %s", d3.msg);
    cr_expect_gt(wide_vector_lines(so3), 0, "x86-64-v3 code should use 256-bit vectors");
  }
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
  kiln_ir_kprogram_destroy(p);
}
#endif

Test(llvm_aot, unknown_cpu_or_triple_is_an_invalid_argument) {
  char dir[] = "/tmp/kiln_aot_XXXXXX";
  cr_assert(mkdtemp(dir));
  char so[256], cmd[512];
  snprintf(so, sizeof so, "%s/libbad.so", dir);
  kiln_kprogram *p = wide_program();
  kiln_llvm_aot_options o = {.prefix = "bad", .so_path = so, .aotrt_lib = KILN_AOTRT_PATH, .cpu = "bogus-cpu-9000"};
  kiln_diag d = {0};
  tp_schedule(p);
  cr_expect_eq(kiln_llvm_export(p, &o, &d), KILN_ERR_INVALID_ARGUMENT, "%s", d.msg);
  cr_expect(strstr(d.msg, "unknown CPU 'bogus-cpu-9000'"), "message: %s", d.msg);
  cr_expect_neq(access(so, F_OK), 0, "no library is written for an unknown CPU");
  o.cpu = NULL;
  o.triple = "nonsense-arch-none";
  kiln_diag d2 = {0};
  tp_schedule(p);
  cr_expect_eq(kiln_llvm_export(p, &o, &d2), KILN_ERR_INVALID_ARGUMENT, "%s", d2.msg);
  cr_expect(strstr(d2.msg, "'nonsense-arch-none'"), "message: %s", d2.msg);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
  kiln_ir_kprogram_destroy(p);
}
