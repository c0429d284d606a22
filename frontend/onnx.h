/* onnx.h - what the frontend/ module offers: the ONNX loader (protobuf-c code generated at
 * build time from the system's onnx.proto) and the importers that decompose each ONNX
 * operator into Kiln's primitive ops. Layer: above ir/, beside runtime/ (it cannot call the
 * interpreter itself; the driver passes a fold callback for shape computations).
 */
#ifndef KILN_ONNX_H
#define KILN_ONNX_H

#include "../ir/ir.h"

/* Evaluates node v (all of whose transitive inputs are constants) and appends it as a
 * constant node; *out_node is that node. */
typedef kiln_status (*kiln_fe_fold_fn)(void *user, kiln_graph *g, int32_t v, int32_t *out_node,
                                       kiln_diag *d);

typedef struct kiln_fe_options {
  const kiln_load_options *load;  /* symbol bindings; may be NULL */
  kiln_fe_fold_fn fold;           /* required */
  void *fold_user;
  /* Graph inputs to import as constants instead, matched by name (e.g. the shape and axes
   * inputs of the ONNX backend tests, read with kiln_fe_load_tensor_pb); may be NULL. The
   * data is copied. */
  int32_t n_frozen;
  const kiln_const *frozen;
} kiln_fe_options;

/* Loads an ONNX model. Errors name the file, and the node and op where they arise; an
 * unsupported model gets one error listing every unsupported op (node name, op type,
 * opset). */
kiln_status kiln_fe_load_onnx(const kiln_allocator *a, const char *path, const kiln_fe_options *o,
                              kiln_graph **g, kiln_diag *d);
kiln_status kiln_fe_load_onnx_buffer(const kiln_allocator *a, const void *data, size_t size,
                                     const char *model_dir, const kiln_fe_options *o,
                                     kiln_graph **g, kiln_diag *d);

/* Reads a serialized onnx.TensorProto (.pb, as in the ONNX backend test data) into a
 * constant (data allocated with a; free with kiln_ir_free). *name may be NULL. */
kiln_status kiln_fe_load_tensor_pb(const kiln_allocator *a, const char *path, kiln_const *out,
                                   kiln_diag *d);

#endif
