/* opaque.c - kiln_rt_opaque, the OPAQUE kernel compiled code calls: runs an opaque graph
 * op (topk, nonzero, scatter, ...) through the reference interpreter's routine, so the
 * op's semantics are defined once (interp.c).
 *
 * If the routine refuses its input data (an out-of-range scatter index, say) this fills
 * the output with zeros (a defined value, never garbage) and returns nonzero; generated
 * code then sets the run's error word (rt.h), and the caller turns that into an error
 * status naming the kernel and its node. Nothing is printed: the status is the report.
 * The interpreter (KILN_VERIFY=1) reports the same error with the offending index.
 */
#include "rt.h"

#include <string.h>

int kiln_rt_opaque(const kiln_rt_opaque_desc *desc, void **bufs) {
  KILN_ASSERT(desc->n_in >= 0 && desc->n_in <= KILN_RT_MAX_OPAQUE_IN);
  kiln_rt_tensor ins[KILN_RT_MAX_OPAQUE_IN];
  for (int i = 0; i < desc->n_in; i++) {
    ins[i].dtype = (kiln_dtype)desc->in_dtypes[i];
    ins[i].shape = desc->in_shapes[i];
    ins[i].data = bufs[desc->in_bufs[i]];
  }
  kiln_rt_tensor out = {(kiln_dtype)desc->out_dtype, desc->out_shape, bufs[desc->out_buf]};
  /* A node standing for the kernel; kiln_rt_eval_node reads op, attrs, shape and name,
   * and accepts a NULL graph (which only supplies the allocator). */
  kiln_node n;
  memset(&n, 0, sizeof n);
  n.op = (kiln_op)desc->op;
  n.dtype = out.dtype;
  n.shape = out.shape;
  n.n_in = desc->n_in;
  n.a = desc->attrs;
  n.name = "opaque kernel";
  kiln_diag d = {KILN_OK, {0}};
  if (kiln_rt_eval_node(NULL, &n, ins, &out, &d) != KILN_OK) {
    memset(out.data, 0, kiln_rt_tensor_nbytes(&out));
    return 1;
  }
  return 0;
}
