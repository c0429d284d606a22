/* opaque.c - kiln_rt_opaque, the OPAQUE kernel compiled code calls: runs an opaque graph
 * op (topk, nonzero, scatter, ...) through the reference interpreter's routine, so the
 * op's semantics are defined once (interp.c).
 *
 * The ABI returns void: generated code has no error path. If the routine fails (an
 * out-of-range scatter index, say) this prints one line to stderr naming the op and the
 * reason and fills the output with zeros, so the run completes with a visible, defined
 * result instead of garbage or a crash. The interpreter (KILN_VERIFY=1) reports the same
 * error as a status.
 */
#include "rt.h"

#include <string.h>

void kiln_rt_opaque(const kiln_rt_opaque_desc *desc, void **bufs) {
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
    fprintf(stderr, "kiln: runtime error, output zeroed: %s\n", d.msg);
    memset(out.data, 0, kiln_rt_tensor_nbytes(&out));
  }
}
