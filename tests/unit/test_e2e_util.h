/* test_e2e_util.h - shared pieces of the end-to-end tests (tests/unit/test_e2e_*.c), which
 * run whole graphs through kiln_compile + kiln_run and compare with kiln_interpret: a
 * small seeded RNG, tensors sized from a graph's inputs/outputs, and the per-dtype
 * comparison of a compiled output against the reference. */
#ifndef KILN_TEST_E2E_UTIL_H
#define KILN_TEST_E2E_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../driver/driver.h"

/* ------------------------------------------------------------------ RNG (splitmix64) */
typedef struct e2e_rng {
  uint64_t s;
} e2e_rng;

static inline uint64_t e2e_next(e2e_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/* Uniform in [lo, hi] (inclusive). */
static inline int64_t e2e_int(e2e_rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(e2e_next(r) % (uint64_t)(hi - lo + 1));
}
/* True with probability p. */
static inline int e2e_chance(e2e_rng *r, double p) {
  return (double)(e2e_next(r) >> 11) * 0x1.0p-53 < p;
}

/* ------------------------------------------------------------------ tensors */
/* Allocates t->data for the given dtype/shape (at least one byte, zeroed). */
static inline void e2e_tensor_alloc(kiln_tensor *t, kiln_dtype dt, int32_t rank, const int64_t *dims) {
  memset(t, 0, sizeof *t);
  t->dtype = dt;
  t->rank = rank;
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    t->dims[i] = dims[i];
    n *= dims[i];
  }
  t->data = calloc((size_t)n * kiln_dtype_size(dt) + 1, 1);
  cr_assert(t->data, "calloc");
}

static inline int64_t e2e_numel(const kiln_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

/* Random data: floats on a quarter grid in [-4, 4] (exact in every float dtype, so
 * comparisons and casts of unmodified inputs have one right answer), ints in [-8, 8],
 * bools 0/1. */
static inline void e2e_fill_random(e2e_rng *r, kiln_tensor *t) {
  int64_t n = e2e_numel(t);
  for (int64_t i = 0; i < n; i++) {
    if (kiln_dtype_is_float(t->dtype))
      kiln_rt_set_f64(t->dtype, t->data, i, (double)e2e_int(r, -16, 16) / 4.0);
    else if (t->dtype == KILN_BOOL)
      kiln_rt_set_i64(t->dtype, t->data, i, e2e_int(r, 0, 1));
    else if (t->dtype == KILN_U8)
      kiln_rt_set_i64(t->dtype, t->data, i, e2e_int(r, 0, 8));
    else
      kiln_rt_set_i64(t->dtype, t->data, i, e2e_int(r, -8, 8));
  }
}

/* ------------------------------------------------------------------ comparison */
/* Tolerance of a result: rel * |ref| + abs * max(1, max |ref| of the tensor). Exact
 * results (ints, bools, and floats whose every step is exact) have both 0. */
typedef struct e2e_tol {
  double rel, abs;
} e2e_tol;

/* The tolerance a float result needs when its value went through inexact arithmetic in
 * dtype dt (the weakest dtype on the path decides). */
static inline e2e_tol e2e_tol_for(kiln_dtype dt) {
  switch (dt) {
  case KILN_F64: return (e2e_tol){1e-9, 1e-10};
  case KILN_F32: return (e2e_tol){1e-4, 1e-5};
  case KILN_F16: return (e2e_tol){1e-2, 2e-3};
  case KILN_BF16: return (e2e_tol){4e-2, 1e-2};
  default: return (e2e_tol){0, 0};
  }
}

/* Compares got with ref (same dtype and shape). Returns -1 when they agree, else the
 * first differing element's index (with the two values in *gv, *rv). */
static inline int64_t e2e_first_mismatch(const kiln_tensor *got, const kiln_tensor *ref, e2e_tol tol,
                                         double *gv, double *rv) {
  int64_t n = e2e_numel(ref);
  bool is_float = kiln_dtype_is_float(ref->dtype);
  double scale = 1;
  if (is_float)
    for (int64_t i = 0; i < n; i++) {
      double b = fabs(kiln_rt_get_f64(ref->dtype, ref->data, i));
      if (isfinite(b) && b > scale) scale = b;
    }
  for (int64_t i = 0; i < n; i++) {
    if (!is_float) {
      int64_t a = kiln_rt_get_i64(ref->dtype, got->data, i), b = kiln_rt_get_i64(ref->dtype, ref->data, i);
      if (a != b) {
        *gv = (double)a;
        *rv = (double)b;
        return i;
      }
      continue;
    }
    double a = kiln_rt_get_f64(ref->dtype, got->data, i), b = kiln_rt_get_f64(ref->dtype, ref->data, i);
    if (isnan(a) && isnan(b)) continue;
    if (a == b) continue; /* also equal infinities */
    if (!(fabs(a - b) <= tol.rel * fabs(b) + tol.abs * scale)) {
      *gv = a;
      *rv = b;
      return i;
    }
  }
  return -1;
}

#endif
