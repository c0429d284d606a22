/* pack.c - the pack pass: the constant B operand of every GEMM the schedule gave generated
 * code (KILN_GEMM_GENERATED) is rearranged once, at compile time, into the panels its
 * microkernels read: panel j holds columns [j w, (j + 1) w) of B, w = nv * lanes, row by
 * row (k rows of w floats, contiguous), columns past n zero. A micro-tile then reads B as
 * one stream of whole vectors, whatever B's layout was (transposed, strided, offset), and
 * no weight is packed at run time. Kernels that read the same B with the same panel
 * width share one packed copy.
 */
#include "passes-impl.h"

#include <stdio.h>
#include <string.h>

/* Element (r, col) of GEMM kernel k's B, from its constant's data. */
static float b_at(const kiln_gemm_desc *g, const float *data, int64_t r, int64_t col) {
  return data[g->b_off + (g->trans_b ? col * g->ldb + r : r * g->ldb + col)];
}

/* An earlier kernel's packed copy of the same B in the same panels, or -1. */
static int32_t shared_copy(const kiln_kprogram *p, int32_t upto, const kiln_kernel *k) {
  const kiln_gemm_desc *g = &k->gemm;
  for (int32_t i = 0; i < upto; i++) {
    const kiln_kernel *o = &p->kernels[i];
    const kiln_gemm_desc *h = &o->gemm;
    if (o->kind == KILN_KERNEL_GEMM && o->sched.gemm_engine == KILN_GEMM_GENERATED && o->sched.packed_b >= 0 &&
        h->b_buf == g->b_buf && h->b_off == g->b_off && h->ldb == g->ldb && h->trans_b == g->trans_b &&
        h->k == g->k && h->n == g->n && o->sched.nv * o->sched.lanes == k->sched.nv * k->sched.lanes)
      return o->sched.packed_b;
  }
  return -1;
}

static kiln_status pack_one(kiln_kprogram *p, int32_t ki, kiln_diag *d) {
  kiln_kernel *k = &p->kernels[ki];
  const kiln_gemm_desc *g = &k->gemm;
  int64_t w = (int64_t)k->sched.nv * k->sched.lanes, np = (g->n + w - 1) / w;
  if ((k->sched.packed_b = shared_copy(p, ki, k)) >= 0) return KILN_OK;
  const kiln_buffer *bb = &p->buffers[g->b_buf];
  int64_t last = g->b_off + (g->trans_b ? (g->n - 1) * g->ldb + g->k - 1 : (g->k - 1) * g->ldb + g->n - 1);
  if ((size_t)(last + 1) * sizeof(float) > p->consts[bb->index].nbytes)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "GEMM kernel %s: B reaches past its constant", k->name ? k->name : "?");
  int64_t dims[3] = {np, g->k, w};
  kiln_shape s = kiln_shape_make(3, dims);
  char name[160];
  snprintf(name, sizeof name, "%s.packed", bb->name ? bb->name : "B");
  int32_t buf;
  float *dst = kiln_ir_kprogram_new_const(p, KILN_F32, &s, name, &buf);
  if (!dst) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory packing the weights of %s", k->name);
  const float *src = p->consts[p->buffers[g->b_buf].index].data; /* after new_const: the table may move */
  for (int64_t j = 0; j < np; j++)
    for (int64_t r = 0; r < g->k; r++) {
      float *row = dst + (j * g->k + r) * w;
      for (int64_t col = j * w; col < (j + 1) * w && col < g->n; col++) row[col - j * w] = b_at(g, src, r, col);
    }
  p->kernels[ki].sched.packed_b = buf;
  return KILN_OK;
}

kiln_status kiln_pass_pack(kiln_kprogram *p, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  for (int32_t i = 0; i < p->n_kernels; i++) {
    if (p->kernels[i].kind != KILN_KERNEL_GEMM || p->kernels[i].sched.gemm_engine != KILN_GEMM_GENERATED) continue;
    kiln_status st = pack_one(p, i, d);
    if (st != KILN_OK) return st;
  }
  return KILN_OK;
}
