/* kiln.c - the kiln command line tool: run, compile, dump, info, bench over the public API
 * (plus the driver's dump helpers). Inputs and outputs are .npy files. The options are
 * parsed and checked in options.c. */
#include "cli.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    "MODEL is an .onnx file, a Kiln IR text file (.kir), or (run, info, bench) a .so from\n"
    "kiln compile.\n"
    "Run `kiln <command> --help` for the options of a command; `kiln --version` prints the\n"
    "version and the backends this kiln was built with.\n";

static const char *usage_run =
    "usage: kiln run MODEL [options]\n"
    "  --input FILE.npy       an input, in graph order (repeat for each input)\n"
    "  --input NAME=FILE.npy  the input named NAME (the others, without NAME=, fill the\n"
    "                         remaining inputs in graph order)\n"
    "  --random-inputs        generate inputs (floats uniform in [-1,1), ints in [0,4))\n"
    "  --seed N               seed for --random-inputs (default 0)\n"
    "  --output-dir DIR       write DIR/output_K.npy for each output K (graph order)\n"
    "  --target cpu|cuda      where to run (default cpu)\n"
    "  --cuda-arch sm_XX      CUDA architecture (default sm_90)\n"
    "  --threads N            worker threads (default 0: all cores)\n"
    "  --fusion none|elementwise|full   fusion level (default full)\n"
    "  --disable-pass LIST    comma-separated graph passes to skip (e.g. layout: keep\n"
    "                         convolutions channels first)\n"
    "  --bind NAME=VALUE      value of a symbolic input dim (ONNX dim_param; default 1)\n"
    "  --verify               check every run against the reference interpreter: on the\n"
    "                         cpu target each kernel's output as it is written (the error\n"
    "                         names the first kernel that disagrees), then the outputs\n"
    "  --reference            run the reference interpreter instead of compiled code\n"
    "  --log-level N          0 quiet, 1 progress of compiles that take over a second\n"
    "                         (default when stderr is a terminal), 2 every compile stage\n";

static const char *usage_compile =
    "usage: kiln compile MODEL -o OUT.so [options]\n"
    "  -o, --output OUT       the shared library (cpu) or the cubin (cuda; CUDA C in OUT.cu)\n"
    "  --header OUT.h         the generated C header (cpu only: the cuda target has no C API)\n"
    "  --name PREFIX          C prefix of the typed API, a C identifier that is no keyword\n"
    "                         (default: the model's file name)\n"
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
    "  --bind NAME=VALUE      value of a symbolic input dim\n"
    "  --log-level N          0 quiet, 1 progress of slow compiles, 2 every stage\n";

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
    "  --bind NAME=VALUE      value of a symbolic input dim\n"
    "  --log-level N          0 quiet, 1 progress of slow compiles, 2 every stage\n";

static const char *usage_info =
    "usage: kiln info MODEL [options]\n"
    "  (symbolic input dims are shown as NAME=VALUE)\n"
    "  --bind NAME=VALUE      value of a symbolic input dim\n";

static const char *usage_bench =
    "usage: kiln bench MODEL [options]\n"
    "  --runs N               timed runs (default 20), after --warmup runs (default 3)\n"
    "  --warmup N\n"
    "  --threads N            worker threads\n"
    "  --target cpu|cuda\n"
    "  --fusion none|elementwise|full\n"
    "  --disable-pass LIST    comma-separated graph passes to skip (e.g. layout: keep\n"
    "                         convolutions channels first)\n"
    "  --cuda-arch sm_XX      CUDA architecture (default sm_90)\n"
    "  --bind NAME=VALUE      value of a symbolic input dim\n"
    "  --seed N               seed of the random inputs (default 0)\n"
    "  --log-level N          0 quiet, 1 progress of slow compiles, 2 every stage\n"
    "  --json                 print one JSON object: model, fusion, kernels, bytes_moved,\n"
    "                         arena_bytes, flops, median_ms, min_ms, mean_ms, runs\n";

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int api_fail(kiln_context *ctx, kiln_status st) {
  fprintf(stderr, "kiln: error: %s (%s)\n", kiln_last_error(ctx), kiln_status_name(st));
  return 1;
}

/* Every --bind must name a symbolic dim of the model's inputs: a misspelt symbol would
 * otherwise leave the dim at its default without a word. */
static kiln_status check_binds(kiln_context *ctx, const opts *o, const kiln_graph *g) {
  for (int b = 0; b < o->n_binds; b++) {
    char syms[1024] = "";
    bool found = false;
    for (int i = 0; i < kiln_graph_num_inputs(g) && !found; i++)
      for (int d = 0; d < KILN_TENSOR_MAX_RANK && !found; d++) {
        const char *s = kiln_graph_input_dim_name(g, i, d);
        if (!s) continue;
        found = !strcmp(s, o->bind_names[b]);
        if (!strstr(syms, s)) snprintf(syms + strlen(syms), sizeof syms - strlen(syms), "%s%s", syms[0] ? ", " : "", s);
      }
    if (!found)
      return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "--bind %s=%lld: %s has no symbolic input dim '%s' (%s%s)",
                               o->bind_names[b], (long long)o->bind_values[b], o->model, o->bind_names[b],
                               syms[0] ? "its symbols: " : "it has none", syms);
  }
  return KILN_OK;
}

static kiln_status load_model(kiln_context *ctx, const opts *o, kiln_graph **g) {
  *g = NULL;
  struct stat sb;
  if (stat(o->model, &sb) != 0)
    return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: %s", o->model, strerror(errno));
  if (ends_with(o->model, ".so"))
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "%s is a model library (a shared object from kiln compile), not a model: kiln %s needs "
                             "the .onnx or .kir it was compiled from (kiln run, info and bench take libraries)",
                             o->model, o->command_name);
  if (!ends_with(o->model, ".onnx")) {
    if (o->n_binds)
      return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT,
                               "--bind: %s is Kiln IR text, whose dims are written in it; --bind is for ONNX models",
                               o->model);
    return kiln_load_text(ctx, o->model, g);
  }
  kiln_load_options lo = {0};
  lo.n_bindings = o->n_binds;
  lo.binding_names = o->bind_names;
  lo.binding_values = o->bind_values;
  kiln_status st = kiln_load_onnx(ctx, o->model, &lo, g);
  if (st == KILN_OK) st = check_binds(ctx, o, *g);
  return st;
}

/* A model library takes no compile options: it is compiled already. */
static kiln_status check_library_options(kiln_context *ctx, const opts *o) {
  static const struct { unsigned bit; const char *what; } given[] = {
      {CLI_GIVEN_COMPILE_OPTION, "--target, --fusion, --disable-pass or --cuda-arch"},
      {CLI_GIVEN_BIND, "--bind"}, {CLI_GIVEN_VERIFY, "--verify"}, {CLI_GIVEN_REFERENCE, "--reference"}};
  for (size_t i = 0; i < sizeof given / sizeof given[0]; i++)
    if (o->given & given[i].bit)
      return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT,
                               "%s is a model library, compiled already: %s does not apply to it", o->model,
                               given[i].what);
  return KILN_OK;
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

static void input_info(kiln_executable *exe, const kiln_graph *g, int i, const char **name, kiln_dtype *dt,
                       int32_t *rank, int64_t *dims) {
  if (exe) kiln_executable_input_info(exe, i, name, dt, rank, dims);
  else kiln_graph_input_info(g, i, name, dt, rank, dims);
}

/* Which file each of the model's n inputs reads: --input NAME=FILE binds by name, a plain
 * --input FILE fills the next input not bound by name, in graph order. */
static int assign_inputs(const opts *o, kiln_executable *exe, const kiln_graph *g, int n, const char **files) {
  bool named[CLI_MAX_INPUTS] = {false};
  for (int i = 0; i < n; i++) files[i] = NULL;
  for (int k = 0; k < o->n_inputs; k++) {
    const char *arg = o->inputs[k], *eq = strchr(arg, '=');
    struct stat sb;
    if (!eq || stat(arg, &sb) == 0) continue; /* a file whose name has '=' in it stays a file */
    int idx = -1;
    for (int i = 0; i < n && idx < 0; i++) {
      const char *name;
      input_info(exe, g, i, &name, NULL, NULL, NULL);
      if (strlen(name) == (size_t)(eq - arg) && !strncmp(name, arg, (size_t)(eq - arg))) idx = i;
    }
    if (idx < 0) {
      char list[1024] = "";
      for (int i = 0; i < n; i++) {
        const char *name;
        input_info(exe, g, i, &name, NULL, NULL, NULL);
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", i ? ", " : "", name);
      }
      return cli_fail("--input %s: the model has no input named '%.*s' (its inputs: %s)", arg, (int)(eq - arg), arg,
                      list);
    }
    if (files[idx]) return cli_fail("--input %s: input '%.*s' is given twice", arg, (int)(eq - arg), arg);
    files[idx] = eq + 1;
    named[k] = true;
  }
  int next = 0;
  for (int k = 0; k < o->n_inputs; k++) {
    if (named[k]) continue;
    while (next < n && files[next]) next++;
    if (next == n) return cli_fail("the model has %d inputs, %d --input files given", n, o->n_inputs);
    files[next] = o->inputs[k];
  }
  for (int i = 0; i < n; i++)
    if (!files[i]) {
      const char *name;
      input_info(exe, g, i, &name, NULL, NULL, NULL);
      return cli_fail("the model has %d inputs, %d --input files given (none for input %d '%s')", n, o->n_inputs, i,
                      name);
    }
  return 0;
}

/* Inputs: from --input files (checked against the model by kiln_run) or random. */
static int prepare_inputs(const opts *o, kiln_executable *exe, const kiln_graph *g, kiln_tensor *in, int *n_in) {
  int n = exe ? kiln_executable_num_inputs(exe) : kiln_graph_num_inputs(g);
  *n_in = 0;
  if (n > CLI_MAX_INPUTS) return cli_fail("model has more than %d inputs", CLI_MAX_INPUTS);
  if (!o->n_inputs && n > 0 && !o->random_inputs)
    return cli_fail("the model has %d inputs: give --input FILE.npy for each, or --random-inputs", n);
  const char *files[CLI_MAX_INPUTS];
  if (o->n_inputs && assign_inputs(o, exe, g, n, files)) return 2;
  memset(in, 0, sizeof *in * (size_t)n);
  *n_in = n;
  uint64_t seed = o->seed;
  for (int i = 0; i < n; i++) {
    const char *name;
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    input_info(exe, g, i, &name, &dt, &rank, dims);
    if (o->n_inputs) {
      kiln_rt_tensor t;
      kiln_diag d = {0};
      if (kiln_rt_npy_read(NULL, files[i], &t, &d) != KILN_OK) {
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
      if (!alloc_tensor(&in[i])) return cli_fail("out of memory for input %s", name);
      fill_random(&in[i], &seed);
    }
  }
  return 0;
}

static int prepare_outputs(kiln_executable *exe, const kiln_graph *g, kiln_tensor *out, int *n_out) {
  int n = exe ? kiln_executable_num_outputs(exe) : kiln_graph_num_outputs(g);
  *n_out = 0;
  if (n > CLI_MAX_INPUTS) return cli_fail("model has more than %d outputs", CLI_MAX_INPUTS);
  memset(out, 0, sizeof *out * (size_t)n);
  *n_out = n;
  for (int i = 0; i < n; i++) {
    memset(&out[i], 0, sizeof out[i]);
    if (exe) kiln_executable_output_info(exe, i, NULL, &out[i].dtype, &out[i].rank, out[i].dims);
    else kiln_graph_output_info(g, i, NULL, &out[i].dtype, &out[i].rank, out[i].dims);
    if (!alloc_tensor(&out[i])) return cli_fail("out of memory for an output");
  }
  return 0;
}

static void free_tensors(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) free(t[i].data);
}

static kiln_status make_context(const opts *o, kiln_context **ctx) {
  kiln_context_options co = {0};
  co.threads = o->threads;
  co.log_level = o->log_level;
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
    if ((st = check_library_options(ctx, o)) != KILN_OK || (st = kiln_load_library(ctx, o->model, exe)) != KILN_OK)
      return api_fail(ctx, st);
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
  if (make_context(o, &ctx) != KILN_OK) return cli_fail("cannot create a context");
  kiln_graph *g;
  kiln_executable *exe;
  kiln_tensor in[CLI_MAX_INPUTS], out[CLI_MAX_INPUTS];
  int n_in = 0, n_out = 0;
  int rc = open_model(ctx, o, &g, &exe);
  if (!rc) rc = prepare_inputs(o, exe, g, in, &n_in);
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
  if (!o->output) return cli_fail("compile needs -o OUT (see kiln compile --help)");
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return cli_fail("cannot create a context");
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
    if (st != KILN_OK && !o->name && strstr(kiln_last_error(ctx), "prefix '"))
      fprintf(stderr, "kiln: (the prefix comes from the file name %s: give one with --name)\n", o->model);
    else if (st == KILN_OK) printf("wrote %s%s%s%s\n", o->output, o->header ? " and " : "", o->header ? o->header : "",
                o->target == KILN_TARGET_CUDA ? " (cubin; CUDA C in .cu beside it)" : "");
  }
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return rc;
}

static int cmd_dump(const opts *o) {
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return cli_fail("cannot create a context");
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

/* "input 0 'x' f32 [batch=1,3]": a symbolic dim shows its symbol (g: the graph's, or NULL). */
static void print_io(const char *what, int i, const char *name, kiln_dtype dt, int rank, const int64_t *dims,
                     const kiln_graph *g) {
  printf("%s %d '%s' %s [", what, i, name, kiln_dtype_name(dt));
  for (int r = 0; r < rank; r++) {
    const char *sym = g ? kiln_graph_input_dim_name(g, i, r) : NULL;
    printf("%s%s%s%lld", r ? "," : "", sym ? sym : "", sym ? "=" : "", (long long)dims[r]);
  }
  printf("]\n");
}

static int info_library(kiln_context *ctx, const opts *o) {
  kiln_executable *exe;
  kiln_status st = check_library_options(ctx, o);
  if (st == KILN_OK) st = kiln_load_library(ctx, o->model, &exe);
  if (st != KILN_OK) return api_fail(ctx, st);
  const char *name;
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  kiln_exe_stats s;
  kiln_executable_stats(exe, &s);
  printf("library %s: %d kernels, arena %lld bytes\n", o->model, s.kernels, (long long)s.arena_bytes);
  for (int i = 0; i < kiln_executable_num_inputs(exe); i++) {
    kiln_executable_input_info(exe, i, &name, &dt, &rank, dims);
    print_io("input", i, name, dt, rank, dims, NULL);
  }
  for (int i = 0; i < kiln_executable_num_outputs(exe); i++) {
    kiln_executable_output_info(exe, i, &name, &dt, &rank, dims);
    print_io("output", i, name, dt, rank, dims, NULL);
  }
  kiln_executable_destroy(exe);
  return 0;
}

static int info_model(kiln_context *ctx, const opts *o) {
  kiln_graph *g = NULL;
  kiln_status st = load_model(ctx, o, &g);
  if (st != KILN_OK) return api_fail(ctx, st);
  const char *name;
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  printf("model '%s': %d nodes, %d constants", g->name, g->n_nodes, g->n_consts);
  size_t bytes = 0;
  for (int i = 0; i < g->n_consts; i++) bytes += g->consts[i].nbytes;
  printf(" (%zu bytes)\n", bytes);
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_graph_input_info(g, i, &name, &dt, &rank, dims);
    print_io("input", i, name, dt, rank, dims, g);
  }
  for (int i = 0; i < g->n_outputs; i++) {
    kiln_graph_output_info(g, i, &name, &dt, &rank, dims);
    print_io("output", i, name, dt, rank, dims, NULL);
  }
  int counts[KILN_OP_COUNT] = {0};
  for (int i = 0; i < g->n_nodes; i++) counts[g->nodes[i].op]++;
  printf("ops:");
  for (int op = 0; op < KILN_OP_COUNT; op++)
    if (counts[op]) printf(" %s=%d", kiln_op_name((kiln_op)op), counts[op]);
  printf("\n");
  kiln_graph_destroy(g);
  return 0;
}

static int cmd_info(const opts *o) {
  kiln_context *ctx;
  if (make_context(o, &ctx) != KILN_OK) return cli_fail("cannot create a context");
  int rc = ends_with(o->model, ".so") ? info_library(ctx, o) : info_model(ctx, o);
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

/* The timing line (or JSON object) of kiln bench: t holds the runs' times, sorted. */
static void print_bench(const opts *o, kiln_executable *exe, const double *t, int runs, double compile_ms) {
  kiln_exe_stats s;
  kiln_executable_stats(exe, &s);
  double sum = 0;
  for (int r = 0; r < runs; r++) sum += t[r];
  double median = runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
  static const char *fusion_names[] = {"full", "elementwise", "none"};
  bool lib = ends_with(o->model, ".so");
  if (o->json)
    printf("{\"model\": \"%s\", \"kind\": \"%s\", \"target\": \"%s\", \"fusion\": \"%s\", \"threads\": %d, "
           "\"kernels\": %d, \"bytes_moved\": %lld, \"arena_bytes\": %lld, \"flops\": %lld, \"compile_ms\": %.3f, "
           "\"cache_hit\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f, \"runs\": %d}\n",
           o->model, lib ? "library" : "model", o->target == KILN_TARGET_CUDA ? "cuda" : "cpu", fusion_names[o->fusion],
           o->threads, s.kernels, (long long)s.bytes_moved, (long long)s.arena_bytes, (long long)s.flops, compile_ms,
           (int)s.cache_hit, median, t[0], sum / runs, runs);
  else if (lib) /* compiled by kiln compile: no cost estimates, no compile */
    printf("%s (model library from kiln compile): %d kernels, arena %.2f MB; loaded in %.1f ms; median %.3f ms, "
           "min %.3f ms over %d runs\n",
           o->model, s.kernels, (double)s.arena_bytes / 1e6, compile_ms, median, t[0], runs);
  else
    printf("%s: %d kernels, %.2f MB moved, arena %.2f MB, %.3f GFLOP; compile %.1f ms; "
           "median %.3f ms, min %.3f ms over %d runs\n",
           o->model, s.kernels, (double)s.bytes_moved / 1e6, (double)s.arena_bytes / 1e6, (double)s.flops / 1e9,
           compile_ms, median, t[0], runs);
}

static int cmd_bench(const opts *o) {
  opts oo = *o;
  oo.random_inputs = true;
  kiln_context *ctx;
  if (make_context(&oo, &ctx) != KILN_OK) return cli_fail("cannot create a context");
  kiln_graph *g = NULL;
  kiln_executable *exe = NULL;
  kiln_tensor in[CLI_MAX_INPUTS], out[CLI_MAX_INPUTS];
  int n_in = 0, n_out = 0, runs = oo.runs, warmup = oo.warmup;
  double *t = calloc((size_t)runs, sizeof *t);
  double compile_ms = now_ms();
  int rc = t ? open_model(ctx, &oo, &g, &exe) : cli_fail("out of memory");
  compile_ms = now_ms() - compile_ms;
  if (!rc) rc = prepare_inputs(&oo, exe, g, in, &n_in);
  if (!rc) rc = prepare_outputs(exe, g, out, &n_out);
  for (int r = 0; !rc && r < warmup + runs; r++) {
    double t0 = now_ms();
    kiln_status st = kiln_run(exe, in, (size_t)n_in, out, (size_t)n_out);
    if (st != KILN_OK) rc = api_fail(ctx, st);
    if (r >= warmup) t[r - warmup] = now_ms() - t0;
  }
  if (!rc) {
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    print_bench(&oo, exe, t, runs, compile_ms);
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
    printf("kiln %s\nbackends:", kiln_version());
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
    unsigned bit;
    int (*fn)(const opts *);
    const char *const *usage;
  } cmds[] = {{"run", CLI_RUN, cmd_run, &usage_run},         {"compile", CLI_COMPILE, cmd_compile, &usage_compile},
              {"dump", CLI_DUMP, cmd_dump, &usage_dump},     {"info", CLI_INFO, cmd_info, &usage_info},
              {"bench", CLI_BENCH, cmd_bench, &usage_bench}};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    if (strcmp(argv[1], cmds[i].name)) continue;
    opts o;
    memset(&o, 0, sizeof o);
    o.command = cmds[i].bit;
    o.command_name = cmds[i].name;
    o.fusion = KILN_FUSION_FULL;
    o.runs = 20;
    o.warmup = 3;
    o.log_level = isatty(2) ? 1 : 0; /* progress of slow compiles on a terminal only */
    int rc = cli_parse(argc, argv, 2, cmds[i].bit, *cmds[i].usage, &o);
    if (rc == 1) return 0;
    if (rc) return rc;
    return cmds[i].fn(&o);
  }
  fprintf(stderr, "kiln: unknown command '%s'\n%s", argv[1], usage_main);
  return 2;
}
