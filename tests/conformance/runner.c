/* runner.c - kiln_conformance: runs the ONNX backend node tests through the real pipeline.
 *
 *   kiln_conformance [--data DIR] [--filter SUBSTR] [--jobs N] [--timeout S] [--json FILE]
 *                    [--fusion full|elementwise|none] [--cache] [-v]
 *
 * Every case directory (test_*, holding model.onnx and test_data_set_*) runs in a forked
 * child with an alarm, so a crash or a hang in one case cannot take the run down. The child
 * loads the model with kiln_load_onnx, compiles it for the CPU with kiln_compile, runs every
 * data set and compares with the expected outputs at ONNX's default tolerances
 * (|out - ref| <= 1e-7 + 1e-3 |ref|, NaN equals NaN, integers and bools exact).
 *
 * Frozen inputs. Some cases feed, as graph inputs, values that Kiln needs at compile time
 * (the shape of a Reshape, the axes of a reduction, the pads of a Pad, TopK's K, ...). Kiln
 * compiles static shapes, so the child first loads the model as is; when that fails with
 * a data-dependent-shape error, which names the graph inputs the value depends on, it
 * reloads with exactly those inputs passed as constant inputs
 * (kiln_load_options.constant_input_*) holding the data set's own tensors, repeating while
 * new names come up. The remaining inputs are fed at run time. This is honest only because
 * the frozen values come from the same test data set the outputs are checked against
 * (each data set is compiled with its own values): it tests Kiln's handling of those
 * values as compile-time constants, not its handling of them as run-time data. The report
 * says how many cases ran with frozen inputs.
 *
 * A case is skipped only when the model declares something Kiln's API cannot represent:
 * sequence/map/optional/sparse values, or string, complex, uint16/32/64, float8/float4,
 * int4/uint4 tensors (see scan.c). Everything else passes or fails with a reason.
 *
 * Output: a per-op table with the pass rate, the failure reasons grouped by frequency, then the line
 * `conformance: N passed, N failed, N skipped`. The exit status is 0 whatever fails (no
 * threshold yet); 2 when the data directory is missing or the arguments are wrong.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln.h"
#include "../../frontend/onnx.h"
#include "conformance.h"

/* Messages and paths are cut to fixed buffers on purpose: a truncated reason is fine. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define RTOL 1e-3
#define ATOL 1e-7
#define MSG_MAX 1024

typedef enum result_kind {
  R_PENDING, /* not run yet */
  R_PASS,
  R_SKIP,
  R_LOAD,    /* kiln_load_onnx failed (or the test data could not be read) */
  R_COMPILE, /* kiln_compile failed */
  R_RUN,     /* kiln_run failed */
  R_WRONG,   /* ran, but the values (or shapes, dtypes) differ */
  R_CRASH,   /* the child died: signal, timeout, or exit without a result */
} result_kind;

static const char *const kind_names[] = {"pending", "passed", "skipped", "load error", "compile error",
                                         "run error", "wrong values", "crash"};

typedef struct conf_case {
  char name[256];
  char op[160];
  conf_model_info info;
  result_kind kind;
  double max_err;
  int n_frozen;        /* graph inputs frozen to test data values (see the header) */
  char msg[MSG_MAX];   /* skip reason or failure detail */
} conf_case;

typedef struct options {
  const char *data;
  const char *filter;
  const char *json;
  int jobs;
  int timeout_s;
  bool verbose;
  bool cache;
  kiln_fusion_level fusion;
} options;

/* ============================================================================= child */

/* The child's verdict, written once to the result pipe: "KIND\tMAXERR\tNFROZEN\tMESSAGE". */
static void report(int fd, result_kind k, double max_err, int n_frozen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void report(int fd, result_kind k, double max_err, int n_frozen, const char *fmt, ...) {
  char msg[MSG_MAX], line[MSG_MAX + 64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  for (char *p = msg; *p; p++)
    if (*p == '\t' || *p == '\n') *p = ' ';
  int n = snprintf(line, sizeof line, "%d\t%.17g\t%d\t%s\n", (int)k, max_err, n_frozen, msg);
  if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
  ssize_t w = write(fd, line, (size_t)n);
  (void)w;
}

/* First line of a kiln error message. */
static const char *first_line(const char *s, char *buf, size_t cap) {
  snprintf(buf, cap, "%s", s);
  char *nl = strchr(buf, '\n');
  if (nl) *nl = 0;
  return buf;
}

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static void shape_str(char *buf, size_t cap, int32_t rank, const int64_t *dims) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < rank && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)dims[i]);
  if (n < cap) snprintf(buf + n, cap - n, "]");
}

static double load_float(kiln_dtype dt, const void *data, int64_t i) {
  switch (dt) {
  case KILN_F32: return ((const float *)data)[i];
  case KILN_F64: return ((const double *)data)[i];
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)data)[i]);
  case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)data)[i]);
  default: return 0;
  }
}

static int64_t load_int(kiln_dtype dt, const void *data, int64_t i) {
  switch (dt) {
  case KILN_I8: return ((const int8_t *)data)[i];
  case KILN_I16: return ((const int16_t *)data)[i];
  case KILN_I32: return ((const int32_t *)data)[i];
  case KILN_I64: return ((const int64_t *)data)[i];
  case KILN_U8: case KILN_BOOL: return ((const uint8_t *)data)[i];
  default: return 0;
  }
}

/* Compares output k; returns false and fills why on a mismatch. *max_err gets the
 * largest |out - ref| seen (inf for a NaN or infinity mismatch). */
static bool compare_output(int k, const kiln_tensor *out, const kiln_const *ref, double *max_err,
                           char *why, size_t cap) {
  int64_t n = kiln_shape_numel(&ref->shape);
  bool is_float = kiln_dtype_is_float(ref->dtype);
  bool ok = true;
  int64_t worst_i = -1;
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double err, tol = 0;
    if (is_float) {
      double a = load_float(out->dtype, out->data, i), b = load_float(ref->dtype, ref->data, i);
      if (isnan(a) || isnan(b)) {
        err = isnan(a) && isnan(b) ? 0 : INFINITY;
      } else if (isinf(a) || isinf(b)) {
        err = a == b ? 0 : INFINITY;
      } else {
        err = fabs(a - b);
        tol = ATOL + RTOL * fabs(b);
      }
    } else {
      int64_t a = load_int(out->dtype, out->data, i), b = load_int(ref->dtype, ref->data, i);
      err = a == b ? 0 : fabs((double)a - (double)b);
    }
    if (err > *max_err) *max_err = err;
    if (err > tol && (worst_i < 0 || err - tol > worst)) {
      ok = false;
      worst = err - tol;
      worst_i = i;
    }
  }
  if (!ok) {
    if (is_float)
      snprintf(why, cap, "output %d: max_err=%.3g; at flat index %lld got %.9g, want %.9g", k,
               *max_err, (long long)worst_i, load_float(out->dtype, out->data, worst_i),
               load_float(ref->dtype, ref->data, worst_i));
    else
      snprintf(why, cap, "output %d: at flat index %lld got %lld, want %lld", k,
               (long long)worst_i, (long long)load_int(out->dtype, out->data, worst_i),
               (long long)load_int(ref->dtype, ref->data, worst_i));
  }
  return ok;
}

/* Reads dir/prefix_0.pb, dir/prefix_1.pb, ... into cs; returns the count or -1 (why set). */
static int load_pbs(const char *dir, const char *prefix, kiln_const *cs, int cap, char *why,
                    size_t why_cap) {
  const kiln_allocator *a = kiln_ir_default_allocator();
  int n = 0;
  for (;; n++) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s_%d.pb", dir, prefix, n);
    if (!file_exists(path)) break;
    if (n == cap) {
      snprintf(why, why_cap, "more than %d %s files", cap, prefix);
      return -1;
    }
    kiln_diag d = {0};
    if (kiln_fe_load_tensor_pb(a, path, &cs[n], &d) != KILN_OK) {
      char line[512];
      snprintf(why, why_cap, "test data %s_%d.pb: %s: %s", prefix, n, kiln_status_name(d.status),
               first_line(d.msg, line, sizeof line));
      return -1;
    }
  }
  return n;
}

static void free_consts(kiln_const *cs, int n) {
  for (int i = 0; i < n; i++) kiln_ir_free(kiln_ir_default_allocator(), cs[i].data);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* Names of the test_data_set_* directories of a case, sorted; returns the count. */
static int list_data_sets(const char *dir, char sets[][64], int cap) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < cap)
    if (!strncmp(e->d_name, "test_data_set_", 14)) snprintf(sets[n++], 64, "%s", e->d_name);
  closedir(d);
  qsort(sets, (size_t)n, 64, cmp_name);
  return n;
}

/* Graph inputs frozen to a data set's values: input numbers of the model (input_<i>.pb). */
typedef struct frozen_set {
  int n;
  int idx[CONF_MAX_INPUTS];
} frozen_set;

static bool is_frozen(const frozen_set *fz, int i) {
  for (int j = 0; j < fz->n; j++)
    if (fz->idx[j] == i) return true;
  return false;
}

/* Adds the graph inputs that a data-dependent-shape error names ("... depends on graph
 * input 'a', 'b'") to fz; returns how many were new. */
static int add_frozen_from(const conf_case *c, const char *msg, frozen_set *fz) {
  static const char key[] = "depends on graph input ";
  const char *p = strstr(msg, key);
  if (!p) return 0;
  p += sizeof key - 1;
  int added = 0;
  while (*p == '\'') {
    const char *e = strchr(p + 1, '\'');
    if (!e) break;
    size_t len = (size_t)(e - p - 1);
    for (int i = 0; i < c->info.n_inputs; i++)
      if (strlen(c->info.input_name[i]) == len && !strncmp(c->info.input_name[i], p + 1, len) &&
          !is_frozen(fz, i) && fz->n < CONF_MAX_INPUTS) {
        fz->idx[fz->n++] = i;
        added++;
      }
    p = e + 1;
    if (strncmp(p, ", ", 2)) break;
    p += 2;
  }
  return added;
}

/* Loads and compiles the model with the inputs in fz frozen to ins (a data set's inputs).
 * Returns R_PASS, or R_LOAD / R_COMPILE with why set (first line) and *full_error the
 * whole message of a load error (for the frozen-input retry). */
static result_kind build(const options *o, kiln_context *ctx, const char *model,
                         const conf_case *c, kiln_load_options lo, const frozen_set *fz,
                         const kiln_const *ins, int n_in, kiln_graph **g, kiln_executable **exe,
                         char *why, size_t cap, char *full_error, size_t full_cap) {
  const char *names[CONF_MAX_INPUTS];
  kiln_tensor vals[CONF_MAX_INPUTS];
  int nf = 0;
  for (int j = 0; j < fz->n; j++) {
    int i = fz->idx[j];
    if (i >= n_in) continue;
    names[nf] = c->info.input_name[i];
    vals[nf].dtype = ins[i].dtype;
    vals[nf].rank = ins[i].shape.rank;
    memcpy(vals[nf].dims, ins[i].shape.dims, sizeof vals[nf].dims);
    vals[nf].data = ins[i].data;
    nf++;
  }
  lo.n_constant_inputs = nf;
  lo.constant_input_names = names;
  lo.constant_input_values = vals;
  char line[MSG_MAX];
  *g = NULL;
  *exe = NULL;
  if (full_error) full_error[0] = 0;
  kiln_status st = kiln_load_onnx(ctx, model, &lo, g);
  if (st != KILN_OK) {
    if (full_error) snprintf(full_error, full_cap, "%s", kiln_last_error(ctx));
    snprintf(why, cap, "%s: %s", kiln_status_name(st), first_line(kiln_last_error(ctx), line, sizeof line));
    *g = NULL;
    return R_LOAD;
  }
  kiln_compile_options copts = {0};
  copts.target = KILN_TARGET_CPU;
  copts.fusion = o->fusion;
  st = kiln_compile(ctx, *g, &copts, exe);
  if (st != KILN_OK) {
    snprintf(why, cap, "%s: %s", kiln_status_name(st), first_line(kiln_last_error(ctx), line, sizeof line));
    *exe = NULL;
    return R_COMPILE;
  }
  return R_PASS;
}

/* Runs data set ins/refs of a compiled case: the inputs not in fz are fed, matched to the
 * executable's inputs by name. Returns the result kind; fills max_err, why. */
static result_kind run_data_set(kiln_context *ctx, kiln_executable *exe, const conf_case *c,
                                const frozen_set *fz, const kiln_const *ins, int n_in,
                                const kiln_const *refs, int n_ref, double *max_err, char *why,
                                size_t cap) {
  enum { MAXIO = 64 };
  kiln_tensor tin[MAXIO], tout[MAXIO];
  result_kind res = R_PASS;
  int n_out = kiln_executable_num_outputs(exe), n_exe_in = kiln_executable_num_inputs(exe);
  int n_fed = 0;
  for (int i = 0; i < n_in; i++) n_fed += !is_frozen(fz, i);
  if (n_fed != n_exe_in || n_out != n_ref) {
    snprintf(why, cap, "the test feeds %d inputs (%d frozen) and expects %d outputs; the "
             "executable has %d and %d", n_fed, n_in - n_fed, n_ref, n_exe_in, n_out);
    return R_RUN;
  }
  memset(tout, 0, sizeof tout);
  for (int j = 0, next = 0; j < n_exe_in; j++) {
    /* By name when the scan knows it, else the next input that is not frozen. */
    const char *name = NULL;
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    int i = -1;
    if (kiln_executable_input_info(exe, j, &name, &dt, &rank, dims) == KILN_OK && name)
      for (int k = 0; k < n_in && k < c->info.n_inputs && i < 0; k++)
        if (!strcmp(c->info.input_name[k], name)) i = k;
    if (i < 0) {
      while (next < n_in && is_frozen(fz, next)) next++;
      i = next++;
    }
    if (i >= n_in || is_frozen(fz, i)) {
      snprintf(why, cap, "executable input %d ('%s') has no test data", j, name ? name : "?");
      return R_RUN;
    }
    tin[j].dtype = ins[i].dtype;
    tin[j].rank = ins[i].shape.rank;
    memcpy(tin[j].dims, ins[i].shape.dims, sizeof tin[j].dims);
    tin[j].data = ins[i].data;
  }
  for (int i = 0; i < n_out && res == R_PASS; i++) {
    const char *name;
    kiln_tensor *t = &tout[i];
    if (kiln_executable_output_info(exe, i, &name, &t->dtype, &t->rank, t->dims) != KILN_OK) {
      snprintf(why, cap, "output %d info: %s", i, kiln_last_error(ctx));
      res = R_RUN;
      break;
    }
    kiln_shape s = kiln_shape_make(t->rank, t->dims);
    char got[160], want[160];
    shape_str(got, sizeof got, t->rank, t->dims);
    shape_str(want, sizeof want, refs[i].shape.rank, refs[i].shape.dims);
    if (!kiln_shape_eq(&s, &refs[i].shape) || t->dtype != refs[i].dtype) {
      snprintf(why, cap, "output %d ('%s'): %s %s, expected %s %s", i, name,
               kiln_dtype_name(t->dtype), got, kiln_dtype_name(refs[i].dtype), want);
      res = R_WRONG;
      break;
    }
    /* calloc(1, 0) may return NULL; always ask for at least one element. */
    size_t nb = (size_t)kiln_shape_numel(&s) * kiln_dtype_size(t->dtype);
    t->data = calloc(1, nb ? nb : 16);
  }
  if (res == R_PASS && kiln_run(exe, tin, (size_t)n_exe_in, tout, (size_t)n_out) != KILN_OK) {
    char line[MSG_MAX];
    snprintf(why, cap, "%s", first_line(kiln_last_error(ctx), line, sizeof line));
    res = R_RUN;
  }
  for (int i = 0; i < n_out && res == R_PASS; i++)
    if (!compare_output(i, &tout[i], &refs[i], max_err, why, cap)) res = R_WRONG;
  for (int i = 0; i < n_out; i++) free(tout[i].data);
  return res;
}

/* The body of the forked child for one case; writes its verdict to fd. */
static void run_case(const options *o, const conf_case *c, int fd) {
  enum { MAXIO = 64 };
  char dir[1024], model[1200], why[MSG_MAX] = "";
  snprintf(dir, sizeof dir, "%s/%s", o->data, c->name);
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  char sets[64][64];
  int n_sets = list_data_sets(dir, sets, 64);

  kiln_context_options co = {0};
  co.threads = 1;
  co.cache_dir = o->cache ? NULL : "";
  kiln_context *ctx;
  if (kiln_context_create(&co, &ctx) != KILN_OK) {
    report(fd, R_LOAD, 0, 0, "kiln_context_create failed");
    return;
  }

  /* The first data set: its shapes bind symbolic input dims, its values any frozen input. */
  kiln_const ins[MAXIO], refs[MAXIO];
  int n_in = 0, n_ref = 0;
  const char *names[CONF_MAX_INPUTS * CONF_MAX_RANK];
  int64_t values[CONF_MAX_INPUTS * CONF_MAX_RANK];
  int n_bind = 0;
  if (n_sets > 0) {
    char set_dir[1200];
    snprintf(set_dir, sizeof set_dir, "%s/%s", dir, sets[0]);
    n_in = load_pbs(set_dir, "input", ins, MAXIO, why, sizeof why);
    if (n_in < 0) {
      report(fd, R_LOAD, 0, 0, "%s", why);
      return;
    }
    for (int i = 0; i < n_in && i < c->info.n_inputs; i++)
      for (int d = 0; d < ins[i].shape.rank && d < CONF_MAX_RANK; d++)
        if (c->info.dim_param[i][d][0]) {
          names[n_bind] = c->info.dim_param[i][d];
          values[n_bind++] = ins[i].shape.dims[d];
        }
  }
  kiln_load_options lo = {0};
  lo.n_bindings = n_bind;
  lo.binding_names = names;
  lo.binding_values = values;

  /* Load as is; on a data-dependent-shape error freeze the inputs it names and retry. */
  frozen_set fz = {0};
  kiln_graph *g = NULL;
  kiln_executable *exe = NULL;
  static char full[8192];
  result_kind k;
  for (int attempt = 0;; attempt++) {
    k = build(o, ctx, model, c, lo, &fz, ins, n_in, &g, &exe, why, sizeof why, full, sizeof full);
    if (k != R_LOAD || attempt >= CONF_MAX_INPUTS || add_frozen_from(c, full, &fz) == 0) break;
    kiln_graph_destroy(g);
    g = NULL;
  }
  if (k != R_PASS) {
    report(fd, k, 0, fz.n, "%s", why);
    return;
  }
  double max_err = 0;
  for (int s = 0; s < n_sets; s++) {
    char set_dir[1200];
    snprintf(set_dir, sizeof set_dir, "%s/%s", dir, sets[s]);
    if (s > 0) {
      free_consts(ins, n_in);
      n_in = load_pbs(set_dir, "input", ins, MAXIO, why, sizeof why);
      if (n_in < 0) {
        report(fd, R_LOAD, max_err, fz.n, "%s: %s", sets[s], why);
        return;
      }
      if (fz.n > 0) { /* this data set's own frozen values */
        kiln_executable_destroy(exe);
        kiln_graph_destroy(g);
        k = build(o, ctx, model, c, lo, &fz, ins, n_in, &g, &exe, why, sizeof why, NULL, 0);
        if (k != R_PASS) {
          report(fd, k, max_err, fz.n, "%s: %s", sets[s], why);
          return;
        }
      }
    }
    n_ref = load_pbs(set_dir, "output", refs, MAXIO, why, sizeof why);
    if (n_ref < 0) {
      report(fd, R_LOAD, max_err, fz.n, "%s: %s", sets[s], why);
      return;
    }
    k = run_data_set(ctx, exe, c, &fz, ins, n_in, refs, n_ref, &max_err, why, sizeof why);
    free_consts(refs, n_ref);
    if (k != R_PASS) {
      report(fd, k, max_err, fz.n, "%s: %s", sets[s], why);
      return;
    }
  }
  free_consts(ins, n_in);
  /* Clean teardown is part of what is tested: a crash here is reported. */
  kiln_executable_destroy(exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  report(fd, R_PASS, max_err, fz.n, "%d data set%s", n_sets, n_sets == 1 ? "" : "s");
}

/* ============================================================================= parent */

typedef struct slot {
  pid_t pid;
  int fd;          /* read end of the result pipe */
  FILE *err;       /* the child's stderr, for crash messages */
  conf_case *c;
} slot;

static bool start_case(const options *o, conf_case *c, slot *sl) {
  int p[2];
  if (pipe(p) != 0) return false;
  FILE *err = tmpfile();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    if (err) fclose(err);
    return false;
  }
  if (pid == 0) {
    close(p[0]);
    if (err) dup2(fileno(err), STDERR_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
    alarm((unsigned)o->timeout_s);
    run_case(o, c, p[1]);
    close(p[1]);
    _exit(0);
  }
  close(p[1]);
  sl->pid = pid;
  sl->fd = p[0];
  sl->err = err;
  sl->c = c;
  return true;
}

/* Fills the case from the child's report, or explains how the child died. */
static void finish_case(const options *o, slot *sl, int status) {
  conf_case *c = sl->c;
  char buf[MSG_MAX + 64] = "";
  size_t n = 0;
  ssize_t r;
  while (n < sizeof buf - 1 && (r = read(sl->fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  buf[n] = 0;
  close(sl->fd);
  int kind, n_frozen;
  double err;
  int off = 0;
  if (n > 0 && sscanf(buf, "%d\t%lg\t%d\t%n", &kind, &err, &n_frozen, &off) == 3 &&
      kind > R_PENDING && kind <= R_CRASH) {
    c->kind = (result_kind)kind;
    c->max_err = err;
    c->n_frozen = n_frozen;
    snprintf(c->msg, sizeof c->msg, "%s", buf + off);
    char *nl = strchr(c->msg, '\n');
    if (nl) *nl = 0;
  } else {
    char tail[400] = "";
    if (sl->err) {
      rewind(sl->err);
      /* The first non-empty line of stderr: an assertion message, typically. */
      while (fgets(tail, sizeof tail, sl->err))
        if (tail[0] != '\n') break;
      char *nl = strchr(tail, '\n');
      if (nl) *nl = 0;
    }
    c->kind = R_CRASH;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
      snprintf(c->msg, sizeof c->msg, "timeout after %d s", o->timeout_s);
    else if (WIFSIGNALED(status))
      snprintf(c->msg, sizeof c->msg, "signal %d (%s)%s%s", WTERMSIG(status),
               strsignal(WTERMSIG(status)), tail[0] ? ": " : "", tail);
    else
      snprintf(c->msg, sizeof c->msg, "exit status %d without a result%s%s",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1, tail[0] ? ": " : "", tail);
  }
  if (sl->err) fclose(sl->err);
  sl->pid = 0;
  if (o->verbose) {
    if (c->kind == R_PASS)
      printf("PASS %s (max_err %.3g%s)\n", c->name, c->max_err,
             c->n_frozen ? ", frozen inputs" : "");
    else
      printf("%s %s: %s: %s\n", c->kind == R_SKIP ? "SKIP" : "FAIL", c->name,
             kind_names[c->kind], c->msg);
    fflush(stdout);
  }
}

static void run_all(const options *o, conf_case *cases, int n) {
  slot *slots = calloc((size_t)o->jobs, sizeof *slots);
  int next = 0, running = 0;
  while (next < n || running > 0) {
    while (running < o->jobs && next < n) {
      conf_case *c = &cases[next++];
      if (c->kind != R_PENDING) { /* decided before forking: skip or scan failure */
        if (o->verbose)
          printf("%s %s: %s\n", c->kind == R_SKIP ? "SKIP" : "FAIL", c->name, c->msg);
        continue;
      }
      int i = 0;
      while (slots[i].pid) i++;
      if (!start_case(o, c, &slots[i])) {
        c->kind = R_CRASH;
        snprintf(c->msg, sizeof c->msg, "could not fork: %s", strerror(errno));
        continue;
      }
      running++;
    }
    if (running == 0) break;
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < o->jobs; i++)
      if (slots[i].pid == pid) {
        finish_case(o, &slots[i], status);
        running--;
      }
  }
  free(slots);
}

/* ============================================================================= report */

/* The reason a failure is grouped under: its kind and message, with the case's own
 * directory removed so that the same error in different cases groups together. */
static void reason_key(const options *o, const conf_case *c, char *key, size_t cap) {
  if (c->kind == R_WRONG) {
    /* The values differ from case to case: group on the kind (and shape/dtype trouble). */
    bool shape = strstr(c->msg, ", expected ") != NULL;
    snprintf(key, cap, "wrong values%s", shape ? ": output shape or dtype differs" : "");
    return;
  }
  char msg[MSG_MAX];
  const char *m = c->msg;
  if (!strncmp(m, "test_data_set_", 14) && strstr(m, ": ")) m = strstr(m, ": ") + 2;
  snprintf(msg, sizeof msg, "%s", m);
  /* Remove "<data>/<case>/" prefixes from paths. */
  char prefix[1400];
  snprintf(prefix, sizeof prefix, "%s/%s/", o->data, c->name);
  for (char *p; (p = strstr(msg, prefix));) memmove(p, p + strlen(prefix), strlen(p + strlen(prefix)) + 1);
  /* Node names differ from case to case ("Attention_0", "ReduceSum_1"): replace every
   * double-quoted name, and its unquoted repetitions, by '*'. */
  char names[8][128];
  int n_names = 0;
  for (const char *q = strchr(msg, '"'); q && n_names < 8;) {
    const char *end = strchr(q + 1, '"');
    if (!end) break;
    if (end > q + 1 && end - q - 1 < 128) {
      snprintf(names[n_names], sizeof names[0], "%.*s", (int)(end - q - 1), q + 1);
      n_names++;
    }
    q = strchr(end + 1, '"');
  }
  for (int i = 0; i < n_names; i++) {
    size_t len = strlen(names[i]);
    for (char *p = msg; (p = strstr(p, names[i]));) {
      memmove(p + 1, p + len, strlen(p + len) + 1);
      *p++ = '*';
    }
  }
  snprintf(key, cap, "%s: %s", kind_names[c->kind], msg);
  if (strlen(key) > 160) strcpy(key + 157, "...");
}

typedef struct tally {
  char key[200];
  int passed, failed, skipped;
  const char *example;
} tally;

static int find_tally(tally **t, int *n, int *cap, const char *key) {
  for (int i = 0; i < *n; i++)
    if (!strcmp((*t)[i].key, key)) return i;
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    *t = realloc(*t, (size_t)*cap * sizeof **t);
  }
  memset(&(*t)[*n], 0, sizeof **t);
  snprintf((*t)[*n].key, sizeof (*t)[*n].key, "%s", key);
  return (*n)++;
}

static int by_key(const void *a, const void *b) {
  return strcasecmp(((const tally *)a)->key, ((const tally *)b)->key);
}

static int by_count(const void *a, const void *b) {
  const tally *x = a, *y = b;
  if (x->failed != y->failed) return y->failed - x->failed;
  return strcmp(x->key, y->key);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static int write_json(const options *o, const conf_case *cases, int n, int np, int nf, int ns) {
  FILE *f = fopen(o->json, "w");
  if (!f) {
    fprintf(stderr, "kiln_conformance: cannot write %s: %s\n", o->json, strerror(errno));
    return -1;
  }
  fprintf(f, "{\n  \"data\": ");
  json_str(f, o->data);
  fprintf(f, ",\n  \"passed\": %d, \"failed\": %d, \"skipped\": %d,\n  \"cases\": [\n", np, nf, ns);
  for (int i = 0; i < n; i++) {
    const conf_case *c = &cases[i];
    fprintf(f, "    {\"name\": ");
    json_str(f, c->name);
    fprintf(f, ", \"op\": ");
    json_str(f, c->op);
    fprintf(f, ", \"result\": \"%s\", \"kind\": ",
            c->kind == R_PASS ? "passed" : c->kind == R_SKIP ? "skipped" : "failed");
    json_str(f, kind_names[c->kind]);
    if (c->kind == R_PASS || c->kind == R_WRONG)
      fprintf(f, ", \"max_err\": %s%.6g%s", isfinite(c->max_err) ? "" : "\"",
              c->max_err, isfinite(c->max_err) ? "" : "\"");
    fprintf(f, ", \"frozen_inputs\": %d, \"message\": ", c->n_frozen);
    json_str(f, c->msg);
    fprintf(f, "}%s\n", i + 1 < n ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  return fclose(f) == 0 ? 0 : -1;
}

static void print_report(const options *o, conf_case *cases, int n) {
  tally *ops = NULL, *reasons = NULL;
  int n_ops = 0, cap_ops = 0, n_reasons = 0, cap_reasons = 0;
  int np = 0, nf = 0, ns = 0;
  for (int i = 0; i < n; i++) {
    conf_case *c = &cases[i];
    int t = find_tally(&ops, &n_ops, &cap_ops, c->op);
    if (c->kind == R_PASS) {
      ops[t].passed++;
      np++;
    } else if (c->kind == R_SKIP) {
      ops[t].skipped++;
      ns++;
    } else {
      ops[t].failed++;
      nf++;
      char key[200];
      reason_key(o, c, key, sizeof key);
      int r = find_tally(&reasons, &n_reasons, &cap_reasons, key);
      reasons[r].failed++;
      if (!reasons[r].example) reasons[r].example = c->name;
    }
  }
  qsort(ops, (size_t)n_ops, sizeof *ops, by_key);
  printf("\n%-40s %7s %7s %7s\n", "op", "passed", "failed", "skipped");
  for (int i = 0; i < n_ops; i++)
    printf("%-40s %7d %7d %7d\n", ops[i].key, ops[i].passed, ops[i].failed, ops[i].skipped);
  int n_ops_all = 0, n_ops_some = 0;
  for (int i = 0; i < n_ops; i++) {
    n_ops_all += ops[i].passed > 0 && ops[i].failed == 0;
    n_ops_some += ops[i].passed > 0;
  }
  printf("pass rate: %.1f%% of the cases run (%d of %d), %.1f%% of all %d cases; "
         "%d of %d ops pass every case run, %d pass at least one\n",
         np + nf ? 100.0 * np / (np + nf) : 0.0, np, np + nf, n ? 100.0 * np / n : 0.0, n,
         n_ops_all, n_ops, n_ops_some);

  qsort(reasons, (size_t)n_reasons, sizeof *reasons, by_count);
  enum { SHOW = 60 };
  if (n_reasons) printf("\nfailure reasons (count, reason, e.g. case):\n");
  for (int i = 0; i < n_reasons && i < SHOW; i++)
    printf("%5d  %s  (e.g. %s)\n", reasons[i].failed, reasons[i].key, reasons[i].example);
  if (n_reasons > SHOW) printf("  ... and %d more distinct reasons (see -v or --json)\n", n_reasons - SHOW);

  /* Skips are listed too, so that nothing is silently left out. */
  tally *skips = NULL;
  int n_skips = 0, cap_skips = 0;
  for (int i = 0; i < n; i++)
    if (cases[i].kind == R_SKIP) {
      int r = find_tally(&skips, &n_skips, &cap_skips, cases[i].msg);
      skips[r].failed++;
      if (!skips[r].example) skips[r].example = cases[i].name;
    }
  qsort(skips, (size_t)n_skips, sizeof *skips, by_count);
  if (n_skips) printf("\nskip reasons:\n");
  for (int i = 0; i < n_skips; i++)
    printf("%5d  %s  (e.g. %s)\n", skips[i].failed, skips[i].key, skips[i].example);

  int n_frozen = 0, np_frozen = 0;
  for (int i = 0; i < n; i++)
    if (cases[i].n_frozen > 0) {
      n_frozen++;
      np_frozen += cases[i].kind == R_PASS;
    }
  printf("\nfrozen inputs: %d cases ran with graph inputs frozen to their own test data values "
         "(%d of them passed)\n", n_frozen, np_frozen);
  if (o->json && write_json(o, cases, n, np, nf, ns) == 0) printf("\nJSON summary: %s\n", o->json);
  printf("conformance: %d passed, %d failed, %d skipped\n", np, nf, ns);
  free(ops);
  free(reasons);
  free(skips);
}

/* ============================================================================= setup */

static bool default_data_dir(char *out, size_t cap) {
  FILE *p = popen("python3 -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__),"
                  " \"backend/test/data/node\"))' 2>/dev/null",
                  "r");
  if (!p) return false;
  bool ok = fgets(out, (int)cap, p) != NULL;
  pclose(p);
  if (!ok) return false;
  out[strcspn(out, "\r\n")] = 0;
  return out[0] != 0;
}

/* The op a case tests: the model's single node; an "_expanded" case (the op's function
 * body) is grouped under its twin's op. */
static void assign_ops(conf_case *cases, int n) {
  for (int i = 0; i < n; i++) {
    conf_case *c = &cases[i];
    const char *ex = strstr(c->name, "_expanded");
    if (ex) {
      char twin[256];
      snprintf(twin, sizeof twin, "%.*s", (int)(ex - c->name), c->name);
      for (int j = 0; j < n; j++)
        if (!strcmp(cases[j].name, twin) && cases[j].info.op_type[0]) {
          snprintf(c->op, sizeof c->op, "%s (expanded)", cases[j].info.op_type);
          break;
        }
      if (c->op[0]) continue;
    }
    if (c->info.op_type[0] && !ex) {
      snprintf(c->op, sizeof c->op, "%s", c->info.op_type);
    } else {
      /* No twin or no nodes: the directory name's op part, test_foo_bar -> foo. */
      const char *s = c->name + (strncmp(c->name, "test_", 5) ? 0 : 5);
      snprintf(c->op, sizeof c->op, "%.*s%s", (int)strcspn(s, "_"), s, ex ? " (expanded)" : "");
    }
  }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln_conformance [--data DIR] [--filter SUBSTR] [--jobs N] [--timeout S]\n"
          "                        [--json FILE] [--fusion full|elementwise|none] [--cache] [-v]\n"
          "Runs the ONNX backend node tests (default DIR: the installed onnx package's\n"
          "backend/test/data/node) through kiln and prints a per-op table and\n"
          "`conformance: N passed, N failed, N skipped`.\n");
}

int main(int argc, char **argv) {
  options o = {0};
  o.jobs = 1;
  o.timeout_s = 60;
  o.fusion = KILN_FUSION_FULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKES_VALUE()                                                  \
  do {                                                                 \
    if (!v) {                                                          \
      fprintf(stderr, "kiln_conformance: %s needs a value\n", a);      \
      return 2;                                                        \
    }                                                                  \
    i++;                                                               \
  } while (0)
    if (!strcmp(a, "--data")) { TAKES_VALUE(); o.data = v; }
    else if (!strcmp(a, "--filter")) { TAKES_VALUE(); o.filter = v; }
    else if (!strcmp(a, "--json")) { TAKES_VALUE(); o.json = v; }
    else if (!strcmp(a, "--jobs") || !strcmp(a, "-j")) { TAKES_VALUE(); o.jobs = atoi(v); }
    else if (!strcmp(a, "--timeout")) { TAKES_VALUE(); o.timeout_s = atoi(v); }
    else if (!strcmp(a, "--fusion")) {
      TAKES_VALUE();
      if (!strcmp(v, "full")) o.fusion = KILN_FUSION_FULL;
      else if (!strcmp(v, "elementwise")) o.fusion = KILN_FUSION_ELEMENTWISE;
      else if (!strcmp(v, "none")) o.fusion = KILN_FUSION_NONE;
      else { fprintf(stderr, "kiln_conformance: --fusion takes full, elementwise or none\n"); return 2; }
    }
    else if (!strcmp(a, "--cache")) o.cache = true;
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o.verbose = true;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
    else { fprintf(stderr, "kiln_conformance: unknown argument '%s'\n", a); usage(stderr); return 2; }
#undef TAKES_VALUE
  }
  if (o.jobs < 1) o.jobs = 1;
  if (o.timeout_s < 1) o.timeout_s = 60;

  char data[1024];
  if (!o.data) {
    if (!default_data_dir(data, sizeof data)) {
      fprintf(stderr, "kiln_conformance: no --data given and python3 could not locate the onnx "
                      "package's backend test data (pip install onnx==1.22.0)\n");
      return 2;
    }
    o.data = data;
  }
  DIR *d = opendir(o.data);
  if (!d) {
    fprintf(stderr, "kiln_conformance: cannot open the test data directory %s: %s\n", o.data,
            strerror(errno));
    return 2;
  }
  int n = 0, cap = 0;
  char **names = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "test_", 5) || (o.filter && !strstr(e->d_name, o.filter))) continue;
    if (n == cap) names = realloc(names, (size_t)(cap = cap ? cap * 2 : 256) * sizeof *names);
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  if (n == 0) {
    fprintf(stderr, "kiln_conformance: no test_* cases in %s%s%s\n", o.data,
            o.filter ? " matching " : "", o.filter ? o.filter : "");
    free(names);
    printf("conformance: 0 passed, 0 failed, 0 skipped\n");
    return 0;
  }

  conf_case *cases = calloc((size_t)n, sizeof *cases);
  for (int i = 0; i < n; i++) {
    conf_case *c = &cases[i];
    snprintf(c->name, sizeof c->name, "%s", names[i]);
    free(names[i]);
    char model[1400];
    snprintf(model, sizeof model, "%s/%s/model.onnx", o.data, c->name);
    c->kind = R_PENDING;
    if (conf_scan_model(model, &c->info, c->msg, sizeof c->msg) != 0) {
      c->kind = R_LOAD;
    } else if (c->info.skip[0]) {
      c->kind = R_SKIP;
      snprintf(c->msg, sizeof c->msg, "%s", c->info.skip);
    }
  }
  free(names);
  assign_ops(cases, n);
  printf("kiln_conformance: %d cases from %s (jobs %d, timeout %d s)\n", n, o.data, o.jobs,
         o.timeout_s);
  fflush(stdout);
  run_all(&o, cases, n);
  print_report(&o, cases, n);
  free(cases);
  return 0;
}
