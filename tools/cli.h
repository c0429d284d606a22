/* cli.h - what the kiln tool's files share: the parsed command line (options.c parses it
 * against each command's own options; kiln.c runs the commands). */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln.h"
#include "../driver/driver.h"

#include <stdbool.h>
#include <stdint.h>

/* The commands, as bits: each option says which commands take it. */
enum {
  CLI_RUN = 1 << 0,
  CLI_COMPILE = 1 << 1,
  CLI_DUMP = 1 << 2,
  CLI_INFO = 1 << 3,
  CLI_BENCH = 1 << 4,
};

/* Options that make no sense for a model library (.so from kiln compile): it is compiled
 * already. Bits of opts.given. */
enum {
  CLI_GIVEN_COMPILE_OPTION = 1 << 0, /* --target, --fusion, --disable-pass, --cuda-arch */
  CLI_GIVEN_BIND = 1 << 1,
  CLI_GIVEN_VERIFY = 1 << 2,
  CLI_GIVEN_REFERENCE = 1 << 3,
};

#define CLI_MAX_INPUTS 64
#define CLI_MAX_BINDS 32
typedef struct opts {
  unsigned command;                  /* CLI_RUN, ... */
  const char *command_name;
  const char *model;
  const char *inputs[CLI_MAX_INPUTS]; /* --input FILE or NAME=FILE, as given */
  int n_inputs;
  bool random_inputs;
  uint64_t seed;
  const char *output_dir, *output, *header, *name, *cuda_arch, *print_after, *disable, *cpu, *triple;
  kiln_target target;
  kiln_fusion_level fusion;
  kiln_report_format report;
  int threads, runs, warmup, log_level;
  bool verify, reference, json, kernels, llvm, cuda_src, elide, fusion_plan;
  const char *bind_names[CLI_MAX_BINDS];
  int64_t bind_values[CLI_MAX_BINDS];
  int n_binds;
  unsigned given;                    /* CLI_GIVEN_* */
} opts;

/* Parses argv[first..] for command cmd (one CLI_ bit) into o (defaults set here): 0, 1
 * for --help (usage printed), or 2 on an error (message printed). */
int cli_parse(int argc, char **argv, int first, unsigned cmd, const char *usage, opts *o);

/* "kiln: " + the message, to stderr; returns 2 (the status of a usage error). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
