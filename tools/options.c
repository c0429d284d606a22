/* options.c - the kiln tool's command line: one table of options saying which commands
 * take each, so an option a command would ignore is an error, and every value is checked
 * (a number in its range, a known name, NAME=VALUE) before anything runs. */
#include "cli.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum opt_kind {
  K_STRING, /* a const char * field */
  K_INT,    /* an int field in [min, max] */
  K_FLAG,   /* a bool field */
  K_CHOICE, /* an enum field: one of a list of names */
  K_INPUT, K_SEED, K_BIND,
} opt_kind;

typedef struct choice {
  const char *name;
  int value;
} choice;

typedef struct choices {
  const char *what;         /* for the error: "target" */
  choice c[4];              /* ends at a NULL name */
} choices;

_Static_assert(sizeof(kiln_target) == sizeof(int) && sizeof(kiln_fusion_level) == sizeof(int) &&
                   sizeof(kiln_report_format) == sizeof(int),
               "K_CHOICE writes enum fields as int");
static const choices targets = {"target", {{"cpu", KILN_TARGET_CPU}, {"cuda", KILN_TARGET_CUDA}, {NULL, 0}}};
static const choices fusions = {"fusion level", {{"none", KILN_FUSION_NONE}, {"elementwise", KILN_FUSION_ELEMENTWISE},
                                                 {"full", KILN_FUSION_FULL}, {NULL, 0}}};
static const choices reports = {"fusion report form", {{"text", KILN_REPORT_TEXT}, {"json", KILN_REPORT_JSON}, {NULL, 0}}};

typedef struct opt_def {
  const char *flag;
  unsigned cmds;  /* the commands that take it (CLI_ bits) */
  opt_kind kind;
  size_t off;     /* K_STRING, K_INT, K_FLAG, K_CHOICE: the field */
  int min, max;   /* K_INT */
  unsigned given; /* the CLI_GIVEN_ bit it sets */
  const choices *choices; /* K_CHOICE */
} opt_def;

enum { COMPILING = CLI_RUN | CLI_COMPILE | CLI_DUMP | CLI_BENCH, EVERY = COMPILING | CLI_INFO };
#define F(field) offsetof(opts, field)
static const opt_def options[] = {
    {"--input", CLI_RUN, K_INPUT, 0, 0, 0, 0, NULL},
    {"--random-inputs", CLI_RUN, K_FLAG, F(random_inputs), 0, 0, 0, NULL},
    {"--seed", CLI_RUN | CLI_BENCH, K_SEED, 0, 0, 0, 0, NULL},
    {"--output-dir", CLI_RUN, K_STRING, F(output_dir), 0, 0, 0, NULL},
    {"-o", CLI_COMPILE, K_STRING, F(output), 0, 0, 0, NULL},
    {"--output", CLI_COMPILE, K_STRING, F(output), 0, 0, 0, NULL},
    {"--header", CLI_COMPILE, K_STRING, F(header), 0, 0, 0, NULL},
    {"--name", CLI_COMPILE, K_STRING, F(name), 0, 0, 0, NULL},
    {"--target", COMPILING, K_CHOICE, F(target), 0, 0, CLI_GIVEN_COMPILE_OPTION, &targets},
    {"--cuda-arch", CLI_RUN | CLI_COMPILE | CLI_BENCH, K_STRING, F(cuda_arch), 0, 0, CLI_GIVEN_COMPILE_OPTION, NULL},
    {"--cpu", CLI_COMPILE, K_STRING, F(cpu), 0, 0, 0, NULL},
    {"--triple", CLI_COMPILE, K_STRING, F(triple), 0, 0, 0, NULL},
    {"--threads", CLI_RUN | CLI_BENCH, K_INT, F(threads), 0, 4096, 0, NULL},
    {"--fusion", COMPILING, K_CHOICE, F(fusion), 0, 0, CLI_GIVEN_COMPILE_OPTION, &fusions},
    {"--disable-pass", COMPILING, K_STRING, F(disable), 0, 0, CLI_GIVEN_COMPILE_OPTION, NULL},
    {"--bind", EVERY, K_BIND, 0, 0, 0, CLI_GIVEN_BIND, NULL},
    {"--verify", CLI_RUN, K_FLAG, F(verify), 0, 0, CLI_GIVEN_VERIFY, NULL},
    {"--reference", CLI_RUN, K_FLAG, F(reference), 0, 0, CLI_GIVEN_REFERENCE, NULL},
    {"--print-after", CLI_DUMP, K_STRING, F(print_after), 0, 0, 0, NULL},
    {"--kernels", CLI_DUMP, K_FLAG, F(kernels), 0, 0, 0, NULL},
    {"--fusion-plan", CLI_DUMP, K_FLAG, F(fusion_plan), 0, 0, 0, NULL},
    {"--llvm", CLI_DUMP, K_FLAG, F(llvm), 0, 0, 0, NULL},
    {"--cuda", CLI_DUMP, K_FLAG, F(cuda_src), 0, 0, 0, NULL},
    {"--fusion-report", CLI_DUMP, K_CHOICE, F(report), 0, 0, 0, &reports},
    {"--elide-constants", CLI_DUMP, K_FLAG, F(elide), 0, 0, 0, NULL},
    {"--runs", CLI_BENCH, K_INT, F(runs), 1, 1000000000, 0, NULL},
    {"--warmup", CLI_BENCH, K_INT, F(warmup), 0, 1000000000, 0, NULL},
    {"--json", CLI_BENCH, K_FLAG, F(json), 0, 0, 0, NULL},
    {"--log-level", COMPILING, K_INT, F(log_level), 0, 2, 0, NULL},
};
#undef F

int cli_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kiln: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 2;
}

/* A whole number in [min, max], nothing else (atoi would take "abc" as 0, "-3" as -3). */
static bool parse_int(const char *v, long long min, long long max, long long *out) {
  char *end;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || x < min || x > max) return false;
  *out = x;
  return true;
}

/* The option's value: after '=' in "--flag=value", else the next argument. */
static const char *take_value(int argc, char **argv, int *i, const char *inline_val, const char *flag) {
  if (inline_val) return inline_val;
  if (*i + 1 < argc) return argv[++*i];
  cli_fail("%s needs a value", flag);
  return NULL;
}

static int parse_bind(opts *o, const char *v) {
  const char *eq = strchr(v, '=');
  long long x;
  if (!eq || eq == v) return cli_fail("--bind expects NAME=VALUE, got '%s'", v);
  if (!parse_int(eq + 1, 0, INT64_MAX, &x))
    return cli_fail("--bind %s: the value must be a whole number >= 0, got '%s'", v, eq + 1);
  if (o->n_binds == CLI_MAX_BINDS) return cli_fail("too many --bind (at most %d)", CLI_MAX_BINDS);
  size_t n = (size_t)(eq - v);
  char *name = malloc(n + 1); /* lives as long as the process: the options do */
  if (!name) return cli_fail("out of memory");
  memcpy(name, v, n);
  name[n] = 0;
  o->bind_names[o->n_binds] = name;
  o->bind_values[o->n_binds++] = x;
  return 0;
}

/* Sets the option d from its value v. 0 or 2 (message printed). */
static int set_option(opts *o, const opt_def *d, const char *v) {
  long long x;
  switch (d->kind) {
  case K_STRING: *(const char **)((char *)o + d->off) = v; return 0;
  case K_FLAG: *(bool *)((char *)o + d->off) = true; return 0;
  case K_INT:
    if (!parse_int(v, d->min, d->max, &x))
      return cli_fail("%s expects a whole number from %d to %d, got '%s'", d->flag, d->min, d->max, v);
    *(int *)((char *)o + d->off) = (int)x;
    return 0;
  case K_SEED:
    if (!parse_int(v, 0, INT64_MAX, &x)) return cli_fail("--seed expects a whole number >= 0, got '%s'", v);
    o->seed = (uint64_t)x;
    return 0;
  case K_INPUT:
    if (o->n_inputs == CLI_MAX_INPUTS) return cli_fail("too many --input (at most %d)", CLI_MAX_INPUTS);
    o->inputs[o->n_inputs++] = v;
    return 0;
  case K_CHOICE: {
    const choices *c = d->choices;
    char names[128] = "";
    for (int k = 0; c->c[k].name; k++) {
      if (!strcmp(v, c->c[k].name)) {
        *(int *)((char *)o + d->off) = c->c[k].value; /* the enum fields are ints */
        return 0;
      }
      const char *sep = k == 0 ? "" : c->c[k + 1].name ? ", " : " or ";
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", sep, c->c[k].name);
    }
    return cli_fail("unknown %s '%s' (%s)", c->what, v, names);
  }
  case K_BIND: return parse_bind(o, v);
  }
  return cli_fail("internal error: option kind %d", (int)d->kind);
}

int cli_parse(int argc, char **argv, int first, unsigned cmd, const char *usage, opts *o) {
  const char *cmd_name = o->command_name;
  for (int i = first; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    char flag[64];
    if (a[0] == '-' && a[1] == '-' && strchr(a, '=')) {
      size_t n = (size_t)(strchr(a, '=') - a);
      if (n >= sizeof flag) n = sizeof flag - 1;
      memcpy(flag, a, n);
      flag[n] = 0;
      val = strchr(a, '=') + 1;
      a = flag;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 1;
    }
    if (a[0] != '-' || !a[1]) {
      if (o->model) return cli_fail("unexpected argument '%s' (one model per command)", a);
      o->model = a;
      continue;
    }
    const opt_def *d = NULL;
    for (size_t k = 0; k < sizeof options / sizeof options[0] && !d; k++)
      if (!strcmp(options[k].flag, a)) d = &options[k];
    if (!d) return cli_fail("unknown option '%s' (see kiln %s --help)", a, cmd_name);
    if (!(d->cmds & cmd)) return cli_fail("kiln %s does not take %s (see kiln %s --help)", cmd_name, a, cmd_name);
    if (d->kind == K_FLAG && val) return cli_fail("%s takes no value", a);
    const char *v = d->kind == K_FLAG ? "" : take_value(argc, argv, &i, val, a);
    if (!v) return 2;
    if (set_option(o, d, v)) return 2;
    o->given |= d->given;
  }
  if (!o->model) {
    fputs(usage, stderr);
    return 2;
  }
  return 0;
}
