/* conformance.h - what the conformance runner's files share: the model scan (op type,
 * symbolic input dims, and why a case must be skipped) and the per-case result record. */
#ifndef KILN_CONFORMANCE_H
#define KILN_CONFORMANCE_H

#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_INPUTS 64
#define CONF_MAX_RANK 8

/* What a light read of model.onnx's protobuf tells the runner before it forks. */
typedef struct conf_model_info {
  char op_type[136];      /* the first node's op_type, "domain.Op" outside the default domain */
  int n_nodes;
  char skip[160];        /* non-empty: the case must be skipped, and why */
  int n_inputs;          /* graph inputs that are not initializers */
  char input_name[CONF_MAX_INPUTS][64]; /* their names, in order (input_<i>.pb feeds input i) */
  /* dim_param names of each input dim, "" where the dim is fixed or unnamed */
  char dim_param[CONF_MAX_INPUTS][CONF_MAX_RANK][48];
} conf_model_info;

/* Reads path; returns 0 on success, -1 (with msg filled) if the file is unreadable or not
 * a protobuf the scanner understands. */
int conf_scan_model(const char *path, conf_model_info *info, char *msg, size_t msg_size);

#endif
