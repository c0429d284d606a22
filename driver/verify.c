/* verify.c - verify mode (KILN_VERIFY=1): each kernel's output compared with the reference
 * interpreter's value of its node as soon as the kernel has run (on the CPU, through the
 * executor's kernel hook), naming the first kernel that disagrees; and the final outputs
 * compared with the interpreter on the source graph. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ per-kernel verify */
/* How far a compiled value may be from the interpreter's: integers and bool exactly;
 * floats within rtol of the tensor's scale (its largest finite |value|) plus atol, since
 * fused kernels round differently and errors of earlier kernels flow in. */
static void verify_tolerance(kiln_dtype dt, double *rtol, double *atol) {
  switch (dt) {
  case KILN_F64: *rtol = 1e-9, *atol = 1e-12; break;
  case KILN_F32: *rtol = 1e-4, *atol = 1e-6; break;
  case KILN_F16: *rtol = 1e-2, *atol = 1e-3; break;
  case KILN_BF16: *rtol = 2e-2, *atol = 1e-2; break;
  default: *rtol = 0, *atol = 0; break;
  }
}

typedef struct verify_diff {
  int64_t at;            /* first element out of tolerance, -1: none */
  double got, want, maxerr, tol;
} verify_diff;

/* Compares n elements of got with want (both of dtype dt). */
static verify_diff verify_compare(kiln_dtype dt, const void *got, const void *want, int64_t n) {
  verify_diff r = {.at = -1};
  if (!kiln_dtype_is_float(dt)) {
    for (int64_t j = 0; j < n; j++) {
      int64_t a = kiln_rt_get_i64(dt, got, j), b = kiln_rt_get_i64(dt, want, j);
      if (a == b) continue;
      double err = fabs((double)a - (double)b);
      if (r.at < 0) r.at = j, r.got = (double)a, r.want = (double)b;
      if (err > r.maxerr) r.maxerr = err;
    }
    return r;
  }
  double rtol, atol, scale = 0;
  verify_tolerance(dt, &rtol, &atol);
  for (int64_t j = 0; j < n; j++) {
    double b = fabs(kiln_rt_get_f64(dt, want, j));
    if (isfinite(b) && b > scale) scale = b;
  }
  r.tol = rtol * scale + atol;
  for (int64_t j = 0; j < n; j++) {
    double a = kiln_rt_get_f64(dt, got, j), b = kiln_rt_get_f64(dt, want, j);
    if ((isnan(a) && isnan(b)) || a == b) continue; /* a == b also covers equal infinities */
    double err = fabs(a - b);
    if (isnan(err)) err = INFINITY;
    if (err > r.maxerr) r.maxerr = err;
    if (err > r.tol && r.at < 0) r.at = j, r.got = a, r.want = b;
  }
  return r;
}

/* TEST HOOK, verify mode only: KILN_VERIFY_CORRUPT_KERNEL=k makes the driver change
 * element 0 of kernel k's output right after it runs, far outside any tolerance, so tests
 * can check that verify mode names exactly that kernel. Never acts without verify. */
static void verify_corrupt(const kiln_buffer *b, void *data) {
  int64_t n = kiln_shape_numel(&b->shape);
  if (n <= 0 || !data) return;
  if (kiln_dtype_is_float(b->dtype)) {
    double big = 0;
    for (int64_t j = 0; j < n; j++) {
      double v = fabs(kiln_rt_get_f64(b->dtype, data, j));
      if (isfinite(v) && v > big) big = v;
    }
    kiln_rt_set_f64(b->dtype, data, 0, kiln_rt_get_f64(b->dtype, data, 0) + 1 + 2 * big);
  } else {
    kiln_rt_set_i64(b->dtype, data, 0, kiln_rt_get_i64(b->dtype, data, 0) ^ 1);
  }
}

/* "[1,2,3]" for flat element i of shape s. */
static void verify_coords(const kiln_shape *s, int64_t i, char *out, size_t n) {
  int64_t c[KILN_MAX_RANK];
  for (int d = s->rank - 1; d >= 0; d--) {
    int64_t ext = s->dims[d] > 0 ? s->dims[d] : 1;
    c[d] = i % ext;
    i /= ext;
  }
  size_t j = (size_t)snprintf(out, n, "[");
  for (int d = 0; d < s->rank && j < n; d++) j += (size_t)snprintf(out + j, n - j, d ? ",%lld" : "%lld", (long long)c[d]);
  if (j < n) snprintf(out + j, n - j, "]");
}

/* Checks kernel k's output buffer (holding node kn->node of e->opt) against the
 * interpreter's value of that node. */
static kiln_status verify_kernel(const kiln_executable *e, int32_t k, const void *data, const kiln_rt_tensor *want,
                                 kiln_diag *d) {
  const kiln_kprogram *p = e->prog;
  const kiln_kernel *kn = &p->kernels[k];
  const kiln_buffer *b = &p->buffers[kn->out_buf];
  const kiln_node *node = &e->opt->nodes[kn->node];
  char src[768] = "";
  size_t j = 0;
  for (int32_t i = 0; i < kn->n_sources && j < sizeof src; i++) {
    bool seen = false; /* one ONNX node often becomes several graph nodes */
    for (int32_t q = 0; q < i && !seen; q++)
      seen = kn->sources[q] && kn->sources[i] && !strcmp(kn->sources[q], kn->sources[i]);
    if (seen) continue;
    if (j > sizeof src - 80) {
      snprintf(src + j, sizeof src - j, ", ... (%d more)", kn->n_sources - i);
      break;
    }
    j += (size_t)snprintf(src + j, sizeof src - j, "%s'%s'", i ? ", " : "", kn->sources[i] ? kn->sources[i] : "?");
  }
  int64_t n = kiln_shape_numel(&b->shape);
  if (want->dtype != b->dtype || kiln_shape_numel(&want->shape) != n)
    return kiln_diag_set(d, KILN_ERR_INTERNAL,
                         "KILN_VERIFY: kernel %d '%s' (from %s): buffer %d '%s' is %s with %lld elements but its node "
                         "%d '%s' is %s with %lld",
                         k, kn->name, src, kn->out_buf, b->name ? b->name : "", kiln_dtype_name(b->dtype), (long long)n,
                         kn->node, node->name ? node->name : "", kiln_dtype_name(want->dtype),
                         (long long)kiln_shape_numel(&want->shape));
  verify_diff r = verify_compare(b->dtype, data, want->data, n);
  if (r.at < 0) return KILN_OK;
  char at[200];
  verify_coords(&b->shape, r.at, at, sizeof at);
  return kiln_diag_set(d, KILN_ERR_INTERNAL,
                       "KILN_VERIFY: kernel %d '%s' (from %s) disagrees with the reference interpreter: buffer %d "
                       "'%s' (%s, node %d '%s'), first differing element %lld %s: compiled %.9g, reference %.9g; "
                       "max error %.6g (tolerance %.3g)",
                       k, kn->name, src, kn->out_buf, b->name ? b->name : "", kiln_dtype_name(b->dtype), kn->node,
                       node->name ? node->name : "", (long long)r.at, at, r.got, r.want, r.maxerr, r.tol);
}

#ifdef KILN_HAVE_LLVM
/* One verified run: the interpreter's value of every node of the optimized graph. */
typedef struct verify_run {
  const kiln_executable *e;
  kiln_rt_tensor *vals;
} verify_run;

/* codegen's kernel hook: kernel k has just written its output. */
static kiln_status after_kernel(void *user, int32_t k, void *const *bufs, kiln_diag *d) {
  const verify_run *r = user;
  const kiln_kprogram *p = r->e->prog;
  const kiln_kernel *kn = &p->kernels[k];
  if (k == r->e->corrupt_kernel) verify_corrupt(&p->buffers[kn->out_buf], bufs[kn->out_buf]);
  if (kn->node < 0 || kn->node >= r->e->opt->n_nodes) return KILN_OK; /* im2col columns: no node */
  return verify_kernel(r->e, k, bufs[kn->out_buf], &r->vals[kn->node], d);
}

kiln_status kiln_driver_verify_cpu_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                                       kiln_diag *d) {
  verify_run r = {e, NULL};
  if (kiln_rt_interpret_values(e->opt, in, e->n_in, &r.vals, d) != KILN_OK) return d->status;
  kiln_status st = kiln_llvm_exec_run(e->state, in, out, after_kernel, &r, d);
  kiln_rt_values_free(e->opt, r.vals);
  return st;
}
#endif

/* Compares every output with the reference interpreter; names the first that differs. */
kiln_status kiln_driver_verify_outputs(kiln_executable *e, const kiln_rt_tensor *in, const kiln_rt_tensor *out) {
  kiln_context *ctx = e->ctx;
  kiln_rt_tensor *ref = kiln_ir_malloc(&ctx->alloc, sizeof *ref * (size_t)(e->n_out + 1));
  if (ref) memset(ref, 0, sizeof *ref * (size_t)(e->n_out + 1));
  kiln_status st = KILN_OK;
  for (int i = 0; ref && i < e->n_out; i++) {
    ref[i] = out[i];
    ref[i].data = kiln_ir_malloc(&ctx->alloc, kiln_rt_tensor_nbytes(&out[i]) + 1);
    if (!ref[i].data) st = KILN_ERR_OUT_OF_MEMORY;
  }
  kiln_diag d = {0};
  if (!ref) st = KILN_ERR_OUT_OF_MEMORY;
  if (st == KILN_OK && kiln_rt_interpret(e->ref, in, e->n_in, ref, e->n_out, &d) != KILN_OK)
    st = kiln_driver_fail(ctx, &d);
  for (int i = 0; st == KILN_OK && i < e->n_out; i++) {
    int64_t n = kiln_shape_numel(&out[i].shape);
    double maxerr = 0, scale = 1;
    int64_t at = -1;
    for (int64_t j = 0; j < n; j++) {
      double a = kiln_rt_get_f64(out[i].dtype, out[i].data, j), b = kiln_rt_get_f64(out[i].dtype, ref[i].data, j);
      if (isnan(a) && isnan(b)) continue;
      double err = fabs(a - b);
      if (isnan(err) || err > maxerr) { maxerr = isnan(err) ? INFINITY : err; at = j; }
      if (fabs(b) > scale) scale = fabs(b);
    }
    if (maxerr > 1e-3 * scale)
      st = kiln_driver_failf(ctx, KILN_ERR_INTERNAL,
                             "KILN_VERIFY: output %d ('%s') differs from the reference interpreter: max "
                             "error %g at element %lld (scale %g)",
                             i, e->out[i].name, maxerr, (long long)at, scale);
  }
  for (int i = 0; ref && i < e->n_out; i++) kiln_ir_free(&ctx->alloc, ref[i].data);
  kiln_ir_free(&ctx->alloc, ref);
  return st;
}


