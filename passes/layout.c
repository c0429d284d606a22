/* layout.c - the layout pass: chooses data layouts per target (NHWC / blocked conv,
 * pre-packed weights, permute sinking). For now every tensor stays row-major in the
 * graph's own dim order, so the pass is a deliberate no-op that keeps its place in the
 * pipeline (and its name for --disable-pass / --print-after). */
#include "passes-impl.h"

kiln_status kiln_pass_layout(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)g;
  (void)t;
  (void)d;
  return KILN_OK;
}
