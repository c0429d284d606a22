/* dce.c - dead code elimination: nodes the graph outputs do not reach are dropped (graph
 * input nodes stay, so the interface never changes). The shared rewrite does the work:
 * it keeps only what the outputs reach. */
#include "passes-impl.h"

kiln_status kiln_pass_dce(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  return kiln_pass_rewrite(g, NULL, 0, NULL, d);
}
