/* memplan.c - memory planning: every ARENA buffer lives from the kernel that writes it
 * to the last kernel that reads it; buffers are placed, largest first, at 64-byte aligned
 * offsets of one arena by best fit among the gaps left by the buffers whose lifetimes
 * overlap theirs, so space freed by dead temporaries is reused and small buffers do not
 * fragment the arena (greedy by size).
 * Lifetimes are closed intervals over steps (kernel indices, except that the two kernels
 * of a with_next pair, which run in one loop nest, share a step): a buffer read by kernel
 * k is still live while k writes, so a kernel's output normally never shares bytes with
 * its inputs, nor with its sibling's.
 * The exception is in-place reuse: a LOOP kernel that reads a buffer only at the element
 * it is about to store (the load's offset is the output's own row-major offset), where
 * that buffer dies at this kernel and has the output's size and element size, stores its
 * output over that buffer (each element is read before it is overwritten, and by the
 * same iteration only). A GEMM kernel never does: the product is stored into its output
 * before its epilogue reads anything. The buffers a GEMM's pack and epilogue sub-kernels
 * touch (the packed B or A scratch, the tile parameters, what they load) live at least while
 * the GEMM kernel runs.
 */
#include "passes-impl.h"

#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64 };

typedef struct live_range {
  int32_t buf;
  int32_t first, last; /* steps: kernel indices, a with_next pair sharing one */
  int64_t offset, size;
} live_range;

static void touch(live_range *r, int32_t nb, int32_t b, int32_t k) {
  if (b < 0 || b >= nb) return; /* e.g. param_buf -1 */
  if (r[b].first < 0 || k < r[b].first) r[b].first = k;
  if (k > r[b].last) r[b].last = k;
}

static void touch_loads(live_range *r, int32_t nb, const kiln_kernel *kn, int32_t k) {
  if (!kn || kn->kind != KILN_KERNEL_LOOP) return;
  touch(r, nb, kn->out_buf, k);
  for (int32_t i = 0; i < kn->n_kx; i++)
    if (kn->kx[i].kind == KILN_KX_LOAD) touch(r, nb, kn->kx[i].buf, k);
}

/* Larger first; ties: earlier first use, then lower buffer id (a deterministic plan). */
static int cmp_size_desc(const void *a, const void *b) {
  const live_range *x = *(live_range *const *)a, *y = *(live_range *const *)b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  if (x->first != y->first) return x->first < y->first ? -1 : 1;
  return (x->buf > y->buf) - (x->buf < y->buf);
}

static int cmp_offset(const void *a, const void *b) {
  const live_range *x = *(live_range *const *)a, *y = *(live_range *const *)b;
  return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Adds scale * (index expression id) to coef[] (per loop variable) and *cst when it is
 * an affine function of the variables built from add, sub, mul by a constant, VARs and
 * CONSTs (what kiln_pass_kb_linearize builds); false for anything else (mod, div, min,
 * select, loads: not provably the own offset). */
static bool affine(const kiln_kernel *k, int32_t id, int64_t scale, int64_t *coef, int64_t *cst, int depth) {
  if (id < 0 || id >= k->n_kx || depth > 64) return false;
  const kiln_kx *x = &k->kx[id];
  if (x->dtype != KILN_I64) return false;
  switch (x->kind) {
  case KILN_KX_CONST: *cst += scale * x->i; return true;
  case KILN_KX_VAR:
    if (x->var < 0 || x->var >= k->n_vars) return false;
    coef[x->var] += scale;
    return true;
  case KILN_KX_ALU:
    if (x->op == KILN_OP_add || x->op == KILN_OP_sub)
      return affine(k, x->a[0], scale, coef, cst, depth + 1) &&
             affine(k, x->a[1], x->op == KILN_OP_sub ? -scale : scale, coef, cst, depth + 1);
    if (x->op == KILN_OP_mul) {
      for (int s = 0; s < 2; s++) {
        const kiln_kx *c = &k->kx[x->a[s]];
        if (c->kind == KILN_KX_CONST) return affine(k, x->a[1 - s], scale * c->i, coef, cst, depth + 1);
      }
    }
    return false;
  default: return false;
  }
}

/* True when offset expression id is the row-major offset of the output point (variables
 * of extent 1 are always 0 and may appear with any coefficient). */
static bool is_own_offset(const kiln_kernel *k, int32_t id) {
  if (k->n_vars > 64) return false;
  int64_t coef[64] = {0}, cst = 0, stride[KILN_MAX_RANK];
  if (!affine(k, id, 1, coef, &cst, 0) || cst != 0) return false;
  kiln_shape_strides(&k->out, stride);
  for (int32_t v = 0; v < k->n_vars; v++) {
    if (k->extent[v] == 1) continue;
    int64_t want = v < k->out.rank ? stride[v] : 0;
    if (coef[v] != want) return false;
  }
  return true;
}

/* The ARENA buffer kernel k may store its output over (see the file comment), or -1. */
static int32_t in_place_source(const kiln_kprogram *p, const live_range *r, int32_t k) {
  const kiln_kernel *kn = &p->kernels[k];
  if (kn->kind != KILN_KERNEL_LOOP) return -1;
  const kiln_buffer *ob = &p->buffers[kn->out_buf];
  for (int32_t i = 0; i < kn->n_kx; i++) {
    const kiln_kx *x = &kn->kx[i];
    if (x->kind != KILN_KX_LOAD) continue;
    int32_t c = x->buf;
    const kiln_buffer *cb = &p->buffers[c];
    if (c == kn->out_buf || cb->kind != KILN_BUF_ARENA || r[c].last != k || r[c].first >= k ||
        cb->nbytes != ob->nbytes || kiln_dtype_size(cb->dtype) != kiln_dtype_size(ob->dtype))
      continue;
    bool own = true; /* every load of c in this kernel reads the element being stored */
    for (int32_t j = 0; j < kn->n_kx && own; j++)
      if (kn->kx[j].kind == KILN_KX_LOAD && kn->kx[j].buf == c) own = is_own_offset(kn, kn->kx[j].a[0]);
    if (own) return c;
  }
  return -1;
}

kiln_status kiln_pass_plan_memory(kiln_kprogram *p, kiln_diag *d) {
  int32_t nb = p->n_buffers;
  p->arena_bytes = 0;
  if (nb == 0) return KILN_OK;
  live_range *r = kiln_ir_malloc(p->alloc, sizeof(live_range) * (size_t)nb);
  live_range **placed = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  live_range **live = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  if (!r || !placed || !live) {
    kiln_ir_free(p->alloc, r);
    kiln_ir_free(p->alloc, placed);
    kiln_ir_free(p->alloc, live);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning memory");
  }
  for (int32_t b = 0; b < nb; b++) {
    r[b] = (live_range){b, -1, -1, 0, 0};
    int64_t sz = (int64_t)p->buffers[b].nbytes;
    r[b].size = (sz + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  }
  /* Time is counted in steps: a kernel that runs with the previous one (with_next)
   * shares its step, so no buffer of one shares bytes with a buffer of the other. */
  for (int32_t ki = 0, k = 0; ki < p->n_kernels; ki++) {
    const kiln_kernel *kn = &p->kernels[ki];
    k = ki > 0 && p->kernels[ki - 1].with_next ? k : ki;
    touch(r, nb, kn->out_buf, k);
    if (kn->kind == KILN_KERNEL_LOOP) {
      touch_loads(r, nb, kn, k);
    } else if (kn->kind == KILN_KERNEL_GEMM) {
      touch(r, nb, kn->gemm.a_buf, k);
      touch(r, nb, kn->gemm.b_buf, k);
      touch(r, nb, kn->gemm.c_buf, k);
      if (kn->pack) touch(r, nb, kn->gemm.param_buf, k);
      touch_loads(r, nb, kn->pack, k);
      touch_loads(r, nb, kn->epilogue, k);
    } else {
      for (int32_t i = 0; i < kn->n_in_bufs; i++) touch(r, nb, kn->in_bufs[i], k);
    }
  }
  /* In-place outputs share their source's bytes: one placement for the chain, live from
   * the source's first use to the output's last. */
  int32_t *alias = kiln_ir_malloc(p->alloc, sizeof(int32_t) * (size_t)nb);
  if (!alias) {
    kiln_ir_free(p->alloc, r);
    kiln_ir_free(p->alloc, placed);
    kiln_ir_free(p->alloc, live);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning memory");
  }
  for (int32_t b = 0; b < nb; b++) alias[b] = b;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    bool paired = p->kernels[k].with_next || (k > 0 && p->kernels[k - 1].with_next);
    if (paired) continue; /* in place, one would overwrite what the other still reads */
    int32_t src = in_place_source(p, r, k), out = p->kernels[k].out_buf;
    if (src < 0 || p->buffers[out].kind != KILN_BUF_ARENA || r[out].first != k) continue;
    int32_t root = src;
    while (alias[root] != root) root = alias[root];
    alias[out] = root;
    if (r[out].last > r[root].last) r[root].last = r[out].last;
    if (r[out].size > r[root].size) r[root].size = r[out].size;
  }
  /* Greedy by size: the largest buffers first, each at the best-fitting gap between the
   * already placed buffers whose lifetimes overlap its own (or after the last of them).
   * Placing big buffers first keeps small short-lived ones from fragmenting the arena. */
  int32_t n_roots = 0;
  for (int32_t b = 0; b < nb; b++)
    if (p->buffers[b].kind == KILN_BUF_ARENA && alias[b] == b && r[b].first >= 0) placed[n_roots++] = &r[b];
  qsort(placed, (size_t)n_roots, sizeof *placed, cmp_size_desc);
  int64_t arena = 0;
  for (int32_t j = 0; j < n_roots; j++) {
    live_range *x = placed[j];
    int32_t n_live = 0;
    for (int32_t i = 0; i < j; i++)
      if (placed[i]->first <= x->last && x->first <= placed[i]->last) live[n_live++] = placed[i];
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
  }
  for (int32_t b = 0; b < nb; b++) {
    if (p->buffers[b].kind != KILN_BUF_ARENA || r[b].first < 0) continue;
    int32_t root = b;
    while (alias[root] != root) root = alias[root];
    p->buffers[b].offset = r[root].offset;
  }
  kiln_ir_free(p->alloc, alias);
  /* An ARENA buffer no kernel touches still needs a valid (empty) place. */
  for (int32_t b = 0; b < nb; b++)
    if (p->buffers[b].kind == KILN_BUF_ARENA && r[b].first < 0) p->buffers[b].offset = 0;
  p->arena_bytes = (size_t)arena;
  kiln_ir_free(p->alloc, live);
  kiln_ir_free(p->alloc, placed);
  kiln_ir_free(p->alloc, r);
  return KILN_OK;
}
