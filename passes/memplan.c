/* memplan.c - memory planning: every ARENA buffer lives from the kernel that writes it
 * to the last kernel that reads it; buffers are placed, in order of first write, at
 * 64-byte aligned offsets of one arena by best fit among the gaps left by the buffers
 * whose lifetimes overlap theirs, so space freed by dead temporaries is reused.
 * Lifetimes are closed intervals over kernel indices: a buffer read by kernel k is still
 * live while k writes, so a kernel's output normally never shares bytes with its inputs.
 * The exception is in-place reuse: a LOOP kernel that reads a buffer only at the element
 * it is about to store (the load's offset is the output's own row-major offset), where
 * that buffer dies at this kernel and has the output's size and element size, stores its
 * output over that buffer (each element is read before it is overwritten, and by the
 * same iteration only). A GEMM kernel never does: the product is stored into its output
 * before its epilogue reads anything. Best fit being greedy, the plan is made with and
 * without in-place reuse and the smaller arena kept. The buffers a GEMM's pack and
 * epilogue sub-kernels touch (the packed B scratch, the tile parameters, what they load)
 * live at least while the GEMM kernel runs.
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

/* Places every ARENA buffer (r[b].offset) in order of first use (ties: buffer order),
 * each by best fit against the placed buffers whose lifetime overlaps, or in place over
 * its kernel's in_place_source when use_in_place; returns the arena size. */
static int64_t place(const kiln_kprogram *p, live_range *r, live_range **placed, live_range **live,
                     bool use_in_place) {
  int32_t nb = p->n_buffers;
  int64_t arena = 0;
  int32_t n_placed = 0;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    int32_t src = use_in_place ? in_place_source(p, r, k) : -1;
    for (int32_t b = 0; b < nb; b++) {
      live_range *x = &r[b];
      if (p->buffers[b].kind != KILN_BUF_ARENA || x->first != k) continue;
      int32_t n_live = 0;
      for (int32_t i = 0; i < n_placed; i++)
        if (placed[i]->last >= x->first) live[n_live++] = placed[i];
      qsort(live, (size_t)n_live, sizeof *live, cmp_offset);
      int64_t best = -1, best_gap = INT64_MAX, cursor = 0;
      bool in_place = false;
      if (src >= 0 && b == p->kernels[k].out_buf) {
        /* In place over src, unless something else live now shares its bytes (it cannot
         * while src lives; checked rather than assumed). */
        bool clash = false;
        for (int32_t i = 0; i < n_live && !clash; i++)
          clash = live[i] != &r[src] && live[i]->offset < r[src].offset + x->size &&
                  r[src].offset < live[i]->offset + live[i]->size;
        in_place = !clash;
        if (in_place) best = r[src].offset;
      }
      for (int32_t i = 0; i < n_live && !in_place; i++) {
        int64_t gap = live[i]->offset - cursor;
        if (gap >= x->size && gap < best_gap) best = cursor, best_gap = gap;
        int64_t end = live[i]->offset + live[i]->size;
        if (end > cursor) cursor = end;
      }
      x->offset = best >= 0 ? best : cursor; /* no gap fits: after the last live buffer */
      if (x->offset + x->size > arena) arena = x->offset + x->size;
      placed[n_placed++] = x;
    }
  }
  return arena;
}

kiln_status kiln_pass_plan_memory(kiln_kprogram *p, kiln_diag *d) {
  int32_t nb = p->n_buffers;
  p->arena_bytes = 0;
  if (nb == 0) return KILN_OK;
  live_range *r = kiln_ir_malloc(p->alloc, sizeof(live_range) * (size_t)nb);
  live_range **placed = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  live_range **live = kiln_ir_malloc(p->alloc, sizeof(live_range *) * (size_t)nb);
  int64_t *saved = kiln_ir_malloc(p->alloc, sizeof(int64_t) * (size_t)nb);
  if (!r || !placed || !live || !saved) {
    kiln_ir_free(p->alloc, r);
    kiln_ir_free(p->alloc, placed);
    kiln_ir_free(p->alloc, live);
    kiln_ir_free(p->alloc, saved);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning memory");
  }
  for (int32_t b = 0; b < nb; b++) {
    r[b] = (live_range){b, -1, -1, 0, 0};
    int64_t sz = (int64_t)p->buffers[b].nbytes;
    r[b].size = (sz + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  }
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
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
  /* In-place reuse changes which gaps later buffers find, and best fit is greedy: on
   * some programs (ResNet-18 at --fusion none) the plan with it is larger. Both plans are
   * made and the smaller kept (ties: in place, which touches less memory). */
  int64_t with = place(p, r, placed, live, true);
  for (int32_t b = 0; b < nb; b++) saved[b] = r[b].offset;
  int64_t without = place(p, r, placed, live, false);
  int64_t arena = without;
  if (with <= without) {
    arena = with;
    for (int32_t b = 0; b < nb; b++) r[b].offset = saved[b];
  }
  for (int32_t b = 0; b < nb; b++)
    if (p->buffers[b].kind == KILN_BUF_ARENA) p->buffers[b].offset = r[b].offset;
  /* An ARENA buffer no kernel touches still needs a valid (empty) place. */
  for (int32_t b = 0; b < nb; b++)
    if (p->buffers[b].kind == KILN_BUF_ARENA && r[b].first < 0) p->buffers[b].offset = 0;
  p->arena_bytes = (size_t)arena;
  kiln_ir_free(p->alloc, saved);
  kiln_ir_free(p->alloc, live);
  kiln_ir_free(p->alloc, placed);
  kiln_ir_free(p->alloc, r);
  return KILN_OK;
}
