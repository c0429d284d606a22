/* memplan.c - memory planning: every ARENA buffer lives from the kernel that writes it
 * to the last kernel that reads it; buffers are placed, in order of first write, at
 * 64-byte aligned offsets of one arena by best fit among the gaps left by the buffers
 * whose lifetimes overlap theirs, so space freed by dead temporaries is reused.
 * A kernel's output never shares bytes with its inputs (lifetimes are closed intervals
 * over kernel indices: a buffer read by kernel k is still live while k writes).
 */
#include "passes-impl.h"

#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64 };

typedef struct live_range {
  int32_t buf;
  int32_t first, last; /* kernel indices */
  int64_t offset, size;
} live_range;

static void touch(live_range *r, int32_t k) {
  if (r->first < 0 || k < r->first) r->first = k;
  if (k > r->last) r->last = k;
}

static int cmp_offset(const void *a, const void *b) {
  const live_range *x = *(live_range *const *)a, *y = *(live_range *const *)b;
  return (x->offset > y->offset) - (x->offset < y->offset);
}

kiln_status kiln_pass_plan_memory(kiln_kprogram *p, kiln_diag *d) {
  int32_t nb = p->n_buffers;
  p->arena_bytes = 0;
  if (nb == 0) return KILN_OK;
  live_range *r = kiln_ir_malloc(p->alloc, sizeof(live_range) * (size_t)nb);
  live_range **placed = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  if (!r || !placed) {
    kiln_ir_free(p->alloc, r);
    kiln_ir_free(p->alloc, placed);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning memory");
  }
  for (int32_t b = 0; b < nb; b++) {
    r[b] = (live_range){b, -1, -1, 0, 0};
    int64_t sz = (int64_t)p->buffers[b].nbytes;
    r[b].size = (sz + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  }
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    touch(&r[kn->out_buf], k);
    if (kn->kind == KILN_KERNEL_LOOP) {
      for (int32_t i = 0; i < kn->n_kx; i++)
        if (kn->kx[i].kind == KILN_KX_LOAD) touch(&r[kn->kx[i].buf], k);
    } else if (kn->kind == KILN_KERNEL_GEMM) {
      touch(&r[kn->gemm.a_buf], k);
      touch(&r[kn->gemm.b_buf], k);
      touch(&r[kn->gemm.c_buf], k);
      if (kn->gemm.param_buf >= 0) touch(&r[kn->gemm.param_buf], k);
      const kiln_kernel *subs[2] = {kn->pack, kn->epilogue};
      for (int s = 0; s < 2; s++)
        for (int32_t i = 0; subs[s] && i < subs[s]->n_kx; i++)
          if (subs[s]->kx[i].kind == KILN_KX_LOAD) touch(&r[subs[s]->kx[i].buf], k);
    } else {
      for (int32_t i = 0; i < kn->n_in_bufs; i++) touch(&r[kn->in_bufs[i]], k);
    }
  }
  /* Buffers in order of first use (ties: buffer order), each placed against the placed
   * buffers whose lifetime overlaps. */
  int64_t arena = 0;
  int32_t n_placed = 0;
  live_range **live = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  if (!live) {
    kiln_ir_free(p->alloc, r);
    kiln_ir_free(p->alloc, placed);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning memory");
  }
  for (int32_t k = 0; k < p->n_kernels; k++) {
    for (int32_t b = 0; b < nb; b++) {
      live_range *x = &r[b];
      if (p->buffers[b].kind != KILN_BUF_ARENA || x->first != k) continue;
      int32_t n_live = 0;
      for (int32_t i = 0; i < n_placed; i++)
        if (placed[i]->last >= x->first) live[n_live++] = placed[i];
      qsort(live, (size_t)n_live, sizeof *live, cmp_offset);
      int64_t best = -1, best_gap = INT64_MAX, cursor = 0;
      for (int32_t i = 0; i < n_live; i++) {
        int64_t gap = live[i]->offset - cursor;
        if (gap >= x->size && gap < best_gap) best = cursor, best_gap = gap;
        int64_t end = live[i]->offset + live[i]->size;
        if (end > cursor) cursor = end;
      }
      x->offset = best >= 0 ? best : cursor; /* no gap fits: after the last live buffer */
      if (x->offset + x->size > arena) arena = x->offset + x->size;
      p->buffers[b].offset = x->offset;
      placed[n_placed++] = x;
    }
  }
  /* An ARENA buffer no kernel touches still needs a valid (empty) place. */
  for (int32_t b = 0; b < nb; b++)
    if (p->buffers[b].kind == KILN_BUF_ARENA && r[b].first < 0) p->buffers[b].offset = 0;
  p->arena_bytes = (size_t)arena;
  kiln_ir_free(p->alloc, live);
  kiln_ir_free(p->alloc, placed);
  kiln_ir_free(p->alloc, r);
  return KILN_OK;
}
