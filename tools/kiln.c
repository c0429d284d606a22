/* kiln.c - the kiln command line tool: run, compile, dump, info, bench over the public API
 * (plus the driver's dump helpers). Inputs and outputs are .npy files. */
#include "kiln.h"
#include "../driver/driver.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *usage_main =
    "usage: kiln <command> [options]\n"
    "\n"
    "Kiln compiles tensor graphs (ONNX models or Kiln IR text) to native code.\n"
    "\n"
    "commands:\n"
    "  run      MODEL   compile (JIT) and run a model, or run a library made by `kiln compile`\n"
    "  compile  MODEL   write a self-contained shared library and C header (AOT)\n"
    "  dump     MODEL   print the IR after a pass, the kernels, LLVM IR, CUDA C or the fusion report\n"
    "  info     MODEL   inputs, outputs and op counts\n"
    "  bench    MODEL   time runs of the compiled model\n"
    "\n"
    "MODEL is an .onnx file, a Kiln IR text file (.kir), or (run, info) a .so from kiln compile.\n"
    "Run `kiln <command> --help` for the options of a command.\n";

static const char *usage_run =
    "usage: kiln run MODEL [options]\n"
    "  --input FILE.npy       an input, in graph order (repeat for each input)\n"
    "  --random-inputs        generate inputs (floats uniform in [-1,1), ints in [0,4))\n"
    "  --seed N               seed for --random-inputs (default 0)\n"
    "  --output-dir DIR       write DIR/output_K.npy for each output K (graph order)\n"
    "  --target cpu|cuda      where to run (default cpu)\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --fusion none|elementwise|full   fusion level (default full)\n"
    "  --disable-pass LIST    comma-separated graph passes to skip (e.g. layout: keep\n"
    "                         convolutions channels first)\n"
    "  --bind NAME=VALUE      value of a symbolic input dim (ONNX dim_param; default 1)\n"
    "  --verify               check every run against the reference interpreter: on the\n"
    "                         cpu target each kernel's output as it is written (the error\n"
    "                         names the first kernel that disagrees), then the outputs\n"
    "  --reference            run the reference interpreter instead of compiled code\n";

static const char *usage_compile =
    "usage: kiln compile MODEL -o OUT.so [options]\n"
    "  -o, --output OUT       the shared library (cpu) or the cubin (cuda; CUDA C in OUT.cu)\n"
    "  --header OUT.h         the generated C header (cpu)\n"
    "  --name PREFIX          C prefix of the typed API (default: the model's file name)\n"
    "  --target cpu|cuda      cpu: LLVM object linked into a .so; cuda: NVRTC-compiled kernels\n"
    "  --cuda-arch sm_XX      CUDA architecture (default sm_90)\n"
    "  --cpu NAME             cpu: the LLVM CPU to generate code for, e.g. x86-64 (baseline,\n"
    "                         runs on any x86-64), x86-64-v3, skylake-avx512, znver4\n"
    "                         (default: this machine's CPU and features); unknown: an error\n"
    "  --triple TRIPLE        cpu: the LLVM target triple (default: this machine's); another\n"
    "                         architecture needs a matching CC and KILN_AOTRT to link\n"
    "  --fusion none|elementwise|full\n"
    "  --disable-pass LIST    comma-separated graph passes to skip (e.g. layout: keep\n"
    "                         convolutions channels first)\n"
    "  --bind NAME=VALUE      value of a symbolic input dim\n";

static const char *usage_dump =
    "usage: kiln dump MODEL [options]\n"
    "  (no option)            the graph as loaded, in Kiln IR text\n"
    "  --print-after PASS     the graph after PASS (or 'all' for after every pass)\n"
    "  --disable-pass LIST    comma-separated passes to skip\n"
    "  --fusion-plan          the fusion plan: each kernel's group of nodes, and every\n"
    "                         refused fusion with the reason\n"
    "  --kernels              the kernel program after fusion, memory planning and\n"
    "                         scheduling (each loop kernel's schedule line)\n"
    "  --llvm                 the optimized LLVM IR module\n"
    "  --cuda                 the generated CUDA C\n"
    "  --fusion-report text|json\n"
    "                         every kernel (sources, category, domain, bytes, flops) and\n"
    "                         every refused fusion; JSON fields in docs/fusion-report.md\n"
    "  --fusion none|elementwise|full\n"
    "  --target cpu|cuda      the target the program is lowered for (default cpu)\n"
    "  --elide-constants      print large constants as ...\n"
    "  --bind NAME=VALUE      value of a symbolic input dim\n";

static const char *usage_info = "usage: kiln info MODEL [--bind NAME=VALUE]\n";

static const char *usage_bench =
    "usage: kiln bench MODEL [options]\n"
    "  --runs N               timed runs (default 20), after --warmup runs (default 3)\n"
    "  --warmup N\n"
    "  --threads N            worker threads\n"
    "  --target cpu|cuda\n"
    "  --fusion none|elementwise|full\n"
    "  --disable-pass LIST    comma-separated graph passes to skip (e.g. layout: keep\n"
    "                         convolutions channels first)\n"
    "  --json                 print one JSON object: model, fusion, kernels, bytes_moved,\n"
    "                         arena_bytes, flops, median_ms, min_ms, mean_ms, runs\n";

/* ------------------------------------------------------------------ options */
#define MAX_INPUTS 64
typedef struct opts {
  const char *model;
  const char *inputs[MAX_INPUTS];
  int n_inputs;
  bool random_inputs;
  uint64_t seed;
  const char *output_dir, *output, *header, *name, *cuda_arch, *print_after, *disable, *cpu, *triple;
  kiln_target target;
  kiln_fusion_level fusion;
  kiln_report_format report;
  int threads, runs, warmup;
  bool verify, reference, json, kernels, llvm, cuda_src, elide, fusion_plan;
  const char *bind_names[32];
  int64_t bind_values[32];
  int n_binds;
} opts;

static int fail(const char *fmt, const char *a) {
  fprintf(stderr, "kiln: ");
  fprintf(stderr, fmt, a);
  fputc('\n', stderr);
  return 2;
}

/* Options that set one field of opts: a string, a number, or a flag. The others are
 * parsed one by one in parse_opts. */
typedef struct opt_field {
  const char *flag;
  size_t off;
} opt_field;
#define N_OPTS(t) (sizeof t / sizeof t[0])
static const opt_field string_opts[] = {
    {"--output-dir", offsetof(opts, output_dir)}, {"-o", offsetof(opts, output)},
    {"--output", offsetof(opts, output)},         {"--header", offsetof(opts, header)},
    {"--name", offsetof(opts, name)},             {"--cuda-arch", offsetof(opts, cuda_arch)},
    {"--cpu", offsetof(opts, cpu)},               {"--triple", offsetof(opts, triple)},
    {"--print-after", offsetof(opts, print_after)}, {"--disable-pass", offsetof(opts, disable)},
};
static const opt_field int_opts[] = {
    {"--threads", offsetof(opts, threads)}, {"--runs", offsetof(opts, runs)}, {"--warmup", offsetof(opts, warmup)},
};
static const opt_field bool_opts[] = {
    {"--random-inputs", offsetof(opts, random_inputs)}, {"--verify", offsetof(opts, verify)},
    {"--reference", offsetof(opts, reference)},         {"--json", offsetof(opts, json)},
    {"--kernels", offsetof(opts, kernels)},             {"--llvm", offsetof(opts, llvm)},
    {"--cuda", offsetof(opts, cuda_src)},               {"--elide-constants", offsetof(opts, elide)},
    {"--fusion-plan", offsetof(opts, fusion_plan)},
};

static const opt_field *find_opt(const opt_field *t, size_t n, const char *flag) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(t[i].flag, flag)) return &t[i];
  return NULL;
}

/* Parses argv[first..]; returns 0, 1 for --help, or 2 on error (message printed). */
static int parse_opts(int argc, char **argv, int first, opts *o, const char *usage) {
  const opt_field *opt;
  for (int i = first; i < argc; i++) {
    char *a = argv[i], *val = NULL;
    char flag[64];
    if (a[0] == '-' && a[1] == '-' && strchr(a, '=')) {
      size_t n = (size_t)(strchr(a, '=') - a);
      if (n >= sizeof flag) n = sizeof flag - 1;
      memcpy(flag, a, n);
      flag[n] = 0;
      val = strchr(a, '=') + 1;
      a = flag;
    }
#define NEXT()                                                                         \
  (val ? val : (i + 1 < argc ? argv[++i] : (fprintf(stderr, "kiln: %s needs a value\n", a), (char *)NULL)))
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 1;
    } else if (a[0] != '-') {
      if (o->model) return fail("unexpected argument '%s'", a);
      o->model = a;
    } else if (!strcmp(a, "--input")) {
      char *v = NEXT();
      if (!v) return 2;
      if (o->n_inputs == MAX_INPUTS) return fail("too many --input (max %s)", "64");
      o->inputs[o->n_inputs++] = v;
    } else if (!strcmp(a, "--seed")) {
      char *v = NEXT();
      if (!v) return 2;
      o->seed = strtoull(v, NULL, 10);
    } else if (!strcmp(a, "--target")) {
      char *v = NEXT();
      if (!v) return 2;
      if (!strcmp(v, "cpu")) o->target = KILN_TARGET_CPU;
      else if (!strcmp(v, "cuda")) o->target = KILN_TARGET_CUDA;
      else return fail("unknown target '%s' (cpu or cuda)", v);
    } else if (!strcmp(a, "--fusion")) {
      char *v = NEXT();
      if (!v) return 2;
      if (!strcmp(v, "none")) o->fusion = KILN_FUSION_NONE;
      else if (!strcmp(v, "elementwise")) o->fusion = KILN_FUSION_ELEMENTWISE;
      else if (!strcmp(v, "full")) o->fusion = KILN_FUSION_FULL;
      else return fail("unknown fusion level '%s' (none, elementwise or full)", v);
    } else if (!strcmp(a, "--fusion-report")) {
      char *v = NEXT();
      if (!v) return 2;
      if (!strcmp(v, "text")) o->report = KILN_REPORT_TEXT;
      else if (!strcmp(v, "json")) o->report = KILN_REPORT_JSON;
      else return fail("unknown fusion report form '%s' (text or json)", v);
    } else if (!strcmp(a, "--bind")) {
      char *v = NEXT();
      if (!v) return 2;
      char *eq = strchr(v, '=');
      if (!eq || o->n_binds == 32) return fail("--bind expects NAME=VALUE, got '%s'", v);
      *eq = 0;
      o->bind_names[o->n_binds] = v;
      o->bind_values[o->n_binds++] = atoll(eq + 1);
    } else if ((opt = find_opt(string_opts, N_OPTS(string_opts), a))) {
      if (!(*(const char **)((char *)o + opt->off) = NEXT())) return 2;
    } else if ((opt = find_opt(int_opts, N_OPTS(int_opts), a))) {
      char *v = NEXT();
      if (!v) return 2;
      *(int *)((char *)o + opt->off) = atoi(v);
    } else if ((opt = find_opt(bool_opts, N_OPTS(bool_opts), a))) {
      *(bool *)((char *)o + opt->off) = true;
    } else {
      return fail("unknown option '%s' (see --help)", a);
    }
#undef NEXT
  }
  if (!o->model) {
    fputs(usage, stderr);
    return 2;
  }
  return 0;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int api_fail(kiln_context *ctx, kiln_status st) {
  fprintf(stderr, "kiln: error: %s (%s)\n", kiln_last_error(ctx), kiln_status_name(st));
  return 1;
}

static kiln_status load_model(kiln_context *ctx, const opts *o, kiln_graph **g) {
  struct stat sb;
  if (stat(o->model, &sb) != 0)
    return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: %s", o->model, strerror(errno));
  if (ends_with(o->model, ".onnx")) {
    kiln_load_options lo = {0};
    lo.n_bindings = o->n_binds;
    lo.binding_names = o->bind_names;
    lo.binding_values = o->bind_values;
    return kiln_load_onnx(ctx, o->model, &lo, g);
  }
  return kiln_load_text(ctx, o->model, g);
}

static void default_prefix(const char *path, char *out, size_t n) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  size_t j = 0;
  if (!(b[0] >= 'a' && b[0] <= 'z') && !(b[0] >= 'A' && b[0] <= 'Z') && j + 1 < n) out[j++] = 'm';
  for (; *b && *b != '.' && j + 1 < n; b++)
    out[j++] = ((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9')) ? *b : '_';
  out[j] = 0;
}

/* ------------------------------------------------------------------ tensors */
static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void *alloc_tensor(kiln_tensor *t) {
  kiln_shape s = kiln_shape_make(t->rank, t->dims);
  size_t n = (size_t)kiln_shape_numel(&s) * kiln_dtype_size(t->dtype);
  /* 64-byte aligned, as a runtime allocates them: Kiln's streaming (non-temporal) stores
   * for large outputs need whole cache lines (render.c; an unaligned output is still
   * written, with ordinary stores) */
  size_t padded = (n + 63) / 64 * 64;
  t->data = aligned_alloc(64, padded ? padded : 64);
  if (t->data) memset(t->data, 0, padded ? padded : 64);
  return t->data;
}

static void fill_random(kiln_tensor *t, uint64_t *seed) {
  kiln_shape s = kiln_shape_make(t->rank, t->dims);
  int64_t n = kiln_shape_numel(&s);
  for (int64_t i = 0; i < n; i++) {
    uint64_t r = splitmix(seed);
    if (kiln_dtype_is_float(t->dtype))
      kiln_rt_set_f64(t->dtype, t->data, i, (double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    else if (t->dtype == KILN_BOOL)
      kiln_rt_set_i64(t->dtype, t->data, i, (int64_t)(r & 1));
    else
      kiln_rt_set_i64(t->dtype, t->data, i, (int64_t)(r % 4));
  }
}

static void print_shape(FILE *f, const kiln_tensor *t) {
  fputc('[', f);
  for (int r = 0; r < t->rank; r++) fprintf(f, "%s%lld", r ? "," : "", (long long)t->dims[r]);
  fputc(']', f);
}

static void print_preview(const kiln_tensor *t) {
  kiln_shape s = kiln_shape_make(t->rank, t->dims);
  int64_t n = kiln_shape_numel(&s);
  printf("   ");
  for (int64_t i = 0; i < n && i < 8; i++) {
    if (kiln_dtype_is_float(t->dtype)) printf(" %.6g", kiln_rt_get_f64(t->dtype, t->data, i));
    else printf(" %lld", (long long)kiln_rt_get_i64(t->dtype, t->data, i));
  }
  printf("%s\n", n > 8 ? " ..." : "");
}

/* Inputs: from --input files (checked against the model) or random. */
static int prepare_inputs(kiln_context *ctx, const opts *o, kiln_executable *exe, const kiln_graph *g,
                          kiln_tensor *in, int *n_in) {
  int n = exe ? kiln_executable_num_inputs(exe) : kiln_graph_num_inputs(g);
  *n_in = n;
  if (n > MAX_INPUTS) return fail("model has more than %s inputs", "64");
  if (o->n_inputs && o->n_inputs != n) {
    fprintf(stderr, "kiln: the model has %d inputs, %d --input files given\n", n, o->n_inputs);
    return 2;
  }
  if (!o->n_inputs && n > 0 && !o->random_inputs) {
    fprintf(stderr, "kiln: the model has %d inputs: give --input FILE.npy for each, or --random-inputs\n", n);
    return 2;
  }
  uint64_t seed = o->seed;
  for (int i = 0; i < n; i++) {
    const char *name;
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    if (exe) kiln_executable_input_info(exe, i, &name, &dt, &rank, dims);
    else kiln_graph_input_info(g, i, &name, &dt, &rank, dims);
    memset(&in[i], 0, sizeof in[i]);
    if (o->n_inputs) {
      kiln_rt_tensor t;
      kiln_diag d = {0};
      if (kiln_rt_npy_read(NULL, o->inputs[i], &t, &d) != KILN_OK) {
        fprintf(stderr, "kiln: error: %s\n", d.msg);
        return 1;
      }
      in[i].dtype = t.dtype;
      in[i].rank = t.shape.rank;
      memcpy(in[i].dims, t.shape.dims, sizeof(int64_t) * (size_t)t.shape.rank);
      in[i].data = t.data;
    } else {
      in[i].dtype = dt;
      in[i].rank = rank;
      memcpy(in[i].dims, dims, sizeof(int64_t) * (size_t)rank);
      if (!alloc_tensor(&in[i])) return fail("out of memory for input %s", name);
      fill_random(&in[i], &seed);
    }
  }
  (void)ctx;
  return 0;
}

static int prepare_outputs(kiln_executable *exe, const kiln_graph *g, kiln_tensor *out, int *n_out) {
  int n = exe ? kiln_executable_num_outputs(exe) : kiln_graph_num_outputs(g);
  *n_out = n;
  if (n > MAX_INPUTS) return fail("model has more than %s outputs", "64");
  for (int i = 0; i < n; i++) {
    memset(&out[i], 0, sizeof out[i]);
    if (exe) kiln_executable_output_info(exe, i, NULL, &out[i].dtype, &out[i].rank, out[i].dims);
    else kiln_graph_output_info(g, i, NULL, &out[i].dtype, &out[i].rank, out[i].dims);
    if (!alloc_tensor(&out[i])) return fail("out of memory for output %s", "");
  }
  return 0;
}

static void free_tensors(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) free(t[i].data);
}

static kiln_status make_context(const opts *o, kiln_context **ctx) {
  kiln_context_options co = {0};
  co.threads = o->threads;
  return kiln_context_create(&co, ctx);
}

static kiln_compile_options compile_opts(const opts *o) {
  kiln_compile_options c = {0};
  c.target = o->target;
  c.fusion = o->fusion;
  c.cuda_arch = o->cuda_arch;
  c.disable_passes = o->disable;
  c.verify = o->verify;
  c.cpu = o->cpu;
  c.triple = o->triple;
  return c;
}

/* Loads a model (graph) or a library (executable), compiling the graph unless asked to
 * interpret it. */
static int open_model(kiln_context *ctx, const opts *o, kiln_graph **g, kiln_executable **exe) {
  *g = NULL;
  *exe = NULL;
  kiln_status st;
  if (ends_with(o->model, ".so")) {
    if ((st = kiln_load_library(ctx, o->model, exe)) != KILN_OK) return api_fail(ctx, st);
    return 0;
  }
  if ((st = load_model(ctx, o, g)) != KILN_OK) return api_fail(ctx, st);
  if (o->reference) return 0;
  kiln_compile_options co = compile_opts(o);
  if ((st = kiln_compile(ctx, *g, &co, exe)) != KILN_OK) return api_fail(ctx, st);
  return 0;
}

/* ------------------------------------------------------------------ commands */
static int cmd_run(const opts *o) {
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return fail("cannot create a context%s", "");
  kiln_graph *g;
  kiln_executable *exe;
  kiln_tensor in[MAX_INPUTS], out[MAX_INPUTS];
  int n_in = 0, n_out = 0;
  int rc = open_model(ctx, o, &g, &exe);
  if (!rc) rc = prepare_inputs(ctx, o, exe, g, in, &n_in);
  if (!rc) rc = prepare_outputs(exe, g, out, &n_out);
  if (!rc) {
    kiln_status st = exe ? kiln_run(exe, in, (size_t)n_in, out, (size_t)n_out)
                         : kiln_interpret(ctx, g, in, (size_t)n_in, out, (size_t)n_out);
    if (st != KILN_OK) rc = api_fail(ctx, st);
  }
  if (!rc && o->output_dir) mkdir(o->output_dir, 0777);
  for (int i = 0; !rc && i < n_out; i++) {
    const char *name = "";
    if (exe) kiln_executable_output_info(exe, i, &name, NULL, NULL, NULL);
    else kiln_graph_output_info(g, i, &name, NULL, NULL, NULL);
    printf("output %d '%s' %s ", i, name, kiln_dtype_name(out[i].dtype));
    print_shape(stdout, &out[i]);
    printf("\n");
    print_preview(&out[i]);
    if (o->output_dir) {
      char path[4096];
      snprintf(path, sizeof path, "%s/output_%d.npy", o->output_dir, i);
      kiln_rt_tensor t = {out[i].dtype, kiln_shape_make(out[i].rank, out[i].dims), out[i].data};
      kiln_diag d = {0};
      if (kiln_rt_npy_write(path, &t, &d) != KILN_OK) {
        fprintf(stderr, "kiln: error: %s\n", d.msg);
        rc = 1;
      }
    }
  }
  free_tensors(in, n_in);
  free_tensors(out, n_out);
  kiln_executable_destroy(exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

static int cmd_compile(const opts *o) {
  if (!o->output) return fail("compile needs -o OUT%s (see kiln compile --help)", "");
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return fail("cannot create a context%s", "");
  kiln_graph *g = NULL;
  kiln_status st = load_model(ctx, o, &g);
  int rc = 0;
  if (st != KILN_OK) rc = api_fail(ctx, st);
  char prefix[128];
  default_prefix(o->model, prefix, sizeof prefix);
  if (!rc) {
    kiln_compile_options co = compile_opts(o);
    st = kiln_export(ctx, g, &co, o->output, o->header, o->name ? o->name : prefix);
    if (st != KILN_OK) rc = api_fail(ctx, st);
    else printf("wrote %s%s%s%s\n", o->output, o->header ? " and " : "", o->header ? o->header : "",
                o->target == KILN_TARGET_CUDA ? " (cubin; CUDA C in .cu beside it)" : "");
  }
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

static int cmd_dump(const opts *o) {
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return fail("cannot create a context%s", "");
  kiln_graph *g = NULL;
  kiln_status st = load_model(ctx, o, &g);
  int rc = 0;
  if (st != KILN_OK) rc = api_fail(ctx, st);
  if (!rc) {
    kiln_dump_options d = {.print_after = o->print_after,
                           .disable_passes = o->disable,
                           .fusion = o->fusion,
                           .kernels = o->kernels,
                           .fusion_plan = o->fusion_plan,
                           .llvm = o->llvm,
                           .cuda = o->cuda_src,
                           .elide_constants = o->elide,
                           .fusion_report = o->report,
                           .model = o->model,
                           .target = o->target};
    st = kiln_driver_dump(ctx, g, &d, stdout);
    if (st != KILN_OK) rc = api_fail(ctx, st);
  }
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

static void print_io(const char *what, int i, const char *name, kiln_dtype dt, int rank, const int64_t *dims) {
  kiln_tensor t = {dt, rank, {0}, NULL};
  memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
  printf("%s %d '%s' %s ", what, i, name, kiln_dtype_name(dt));
  print_shape(stdout, &t);
  printf("\n");
}

static int cmd_info(const opts *o) {
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return fail("cannot create a context%s", "");
  int rc = 0;
  const char *name;
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  if (ends_with(o->model, ".so")) {
    kiln_executable *exe;
    kiln_status st = kiln_load_library(ctx, o->model, &exe);
    if (st != KILN_OK) {
      rc = api_fail(ctx, st);
    } else {
      kiln_exe_stats s;
      kiln_executable_stats(exe, &s);
      printf("library %s: %d kernels, arena %lld bytes\n", o->model, s.kernels, (long long)s.arena_bytes);
      for (int i = 0; i < kiln_executable_num_inputs(exe); i++) {
        kiln_executable_input_info(exe, i, &name, &dt, &rank, dims);
        print_io("input", i, name, dt, rank, dims);
      }
      for (int i = 0; i < kiln_executable_num_outputs(exe); i++) {
        kiln_executable_output_info(exe, i, &name, &dt, &rank, dims);
        print_io("output", i, name, dt, rank, dims);
      }
      kiln_executable_destroy(exe);
    }
    kiln_context_destroy(ctx);
    return rc;
  }
  kiln_graph *g = NULL;
  kiln_status st = load_model(ctx, o, &g);
  if (st != KILN_OK) {
    rc = api_fail(ctx, st);
  } else {
    printf("model '%s': %d nodes, %d constants", g->name, g->n_nodes, g->n_consts);
    size_t bytes = 0;
    for (int i = 0; i < g->n_consts; i++) bytes += g->consts[i].nbytes;
    printf(" (%zu bytes)\n", bytes);
    for (int i = 0; i < g->n_inputs; i++) {
      kiln_graph_input_info(g, i, &name, &dt, &rank, dims);
      print_io("input", i, name, dt, rank, dims);
    }
    for (int i = 0; i < g->n_outputs; i++) {
      kiln_graph_output_info(g, i, &name, &dt, &rank, dims);
      print_io("output", i, name, dt, rank, dims);
    }
    int counts[KILN_OP_COUNT] = {0};
    for (int i = 0; i < g->n_nodes; i++) counts[g->nodes[i].op]++;
    printf("ops:");
    for (int op = 0; op < KILN_OP_COUNT; op++)
      if (counts[op]) printf(" %s=%d", kiln_op_name((kiln_op)op), counts[op]);
    printf("\n");
  }
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmd_bench(const opts *o) {
  opts oo = *o;
  oo.random_inputs = true;
  oo.reference = false;
  kiln_context *ctx;
  if (make_context(&oo, &ctx) != KILN_OK) return fail("cannot create a context%s", "");
  kiln_graph *g;
  kiln_executable *exe;
  kiln_tensor in[MAX_INPUTS], out[MAX_INPUTS];
  int n_in = 0, n_out = 0;
  int runs = oo.runs > 0 ? oo.runs : 20, warmup = oo.warmup > 0 ? oo.warmup : 3;
  double *t = calloc((size_t)runs, sizeof *t);
  double compile_ms = now_ms();
  int rc = t ? open_model(ctx, &oo, &g, &exe) : 2;
  compile_ms = now_ms() - compile_ms;
  if (!rc) rc = prepare_inputs(ctx, &oo, exe, g, in, &n_in);
  if (!rc) rc = prepare_outputs(exe, g, out, &n_out);
  for (int r = 0; !rc && r < warmup + runs; r++) {
    double t0 = now_ms();
    kiln_status st = kiln_run(exe, in, (size_t)n_in, out, (size_t)n_out);
    if (st != KILN_OK) rc = api_fail(ctx, st);
    if (r >= warmup) t[r - warmup] = now_ms() - t0;
  }
  if (!rc) {
    kiln_exe_stats s;
    kiln_executable_stats(exe, &s);
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    double sum = 0;
    for (int r = 0; r < runs; r++) sum += t[r];
    double median = runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
    static const char *fusion_names[] = {"full", "elementwise", "none"};
    if (oo.json)
      printf("{\"model\": \"%s\", \"target\": \"%s\", \"fusion\": \"%s\", \"threads\": %d, \"kernels\": %d, "
             "\"bytes_moved\": %lld, \"arena_bytes\": %lld, \"flops\": %lld, \"compile_ms\": %.3f, "
             "\"cache_hit\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f, \"runs\": %d}\n",
             oo.model, oo.target == KILN_TARGET_CUDA ? "cuda" : "cpu", fusion_names[oo.fusion], oo.threads,
             s.kernels, (long long)s.bytes_moved, (long long)s.arena_bytes, (long long)s.flops, compile_ms,
             (int)s.cache_hit, median, t[0], sum / runs, runs);
    else
      printf("%s: %d kernels, %.2f MB moved, arena %.2f MB, %.3f GFLOP; compile %.1f ms; "
             "median %.3f ms, min %.3f ms over %d runs\n",
             oo.model, s.kernels, (double)s.bytes_moved / 1e6, (double)s.arena_bytes / 1e6,
             (double)s.flops / 1e9, compile_ms, median, t[0], runs);
  }
  free(t);
  free_tensors(in, n_in);
  free_tensors(out, n_out);
  kiln_executable_destroy(exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(usage_main, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("kiln %s\nbackends:", KILN_CLI_VERSION);
#ifdef KILN_HAVE_LLVM
    printf(" cpu");
#endif
#ifdef KILN_HAVE_CUDA
    printf(" cuda");
#endif
    printf("\n");
    return 0;
  }
  static const struct {
    const char *name;
    int (*fn)(const opts *);
    const char *const *usage;
  } cmds[] = {{"run", cmd_run, &usage_run},       {"compile", cmd_compile, &usage_compile},
              {"dump", cmd_dump, &usage_dump},    {"info", cmd_info, &usage_info},
              {"bench", cmd_bench, &usage_bench}};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    if (strcmp(argv[1], cmds[i].name)) continue;
    opts o;
    memset(&o, 0, sizeof o);
    o.fusion = KILN_FUSION_FULL;
    int rc = parse_opts(argc, argv, 2, &o, *cmds[i].usage);
    if (rc == 1) return 0;
    if (rc) return rc;
    return cmds[i].fn(&o);
  }
  fprintf(stderr, "kiln: unknown command '%s'\n%s", argv[1], usage_main);
  return 2;
}
