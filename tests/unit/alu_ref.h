/* alu_ref.h - the expected value of each elementwise op on doubles, written with libm
 * independently of the interpreter, shared by the LLVM and CUDA backend tests. Returns
 * NAN for an op it does not know (the tests that use it check every op has a case). */
#ifndef KILN_TEST_ALU_REF_H
#define KILN_TEST_ALU_REF_H

#include <math.h>
#include <stdbool.h>

#include "../../ir/ir.h"

static inline double alu_ref(kiln_op op, int kind, double a, double b, bool c) {
  switch (op) {
  case KILN_OP_neg: return -a;
  case KILN_OP_abs: return fabs(a);
  case KILN_OP_exp: return exp(a);
  case KILN_OP_log: return log(a);
  case KILN_OP_sqrt: return sqrt(a);
  case KILN_OP_rsqrt: return 1 / sqrt(a);
  case KILN_OP_recip: return 1 / a;
  case KILN_OP_tanh: return tanh(a);
  case KILN_OP_sigmoid: return 1 / (1 + exp(-a));
  case KILN_OP_erf: return erf(a);
  case KILN_OP_sin: return sin(a);
  case KILN_OP_cos: return cos(a);
  case KILN_OP_atan: return atan(a);
  case KILN_OP_floor: return floor(a);
  case KILN_OP_ceil: return ceil(a);
  case KILN_OP_round: return nearbyint(a); /* default rounding mode: half to even */
  case KILN_OP_sign: return a > 0 ? 1 : a < 0 ? -1 : a;
  case KILN_OP_isnan: return isnan(a);
  case KILN_OP_add: return a + b;
  case KILN_OP_sub: return a - b;
  case KILN_OP_mul: return a * b;
  case KILN_OP_div: return a / b;
  case KILN_OP_pow: return pow(a, b);
  case KILN_OP_max: return isnan(a) || isnan(b) ? NAN : fmax(a, b);
  case KILN_OP_min: return isnan(a) || isnan(b) ? NAN : fmin(a, b);
  case KILN_OP_mod: {
    double r = fmod(a, b);
    if (kind == 0 && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
  case KILN_OP_eq: return a == b;
  case KILN_OP_ne: return a != b;
  case KILN_OP_lt: return a < b;
  case KILN_OP_le: return a <= b;
  case KILN_OP_gt: return a > b;
  case KILN_OP_ge: return a >= b;
  case KILN_OP_select: return c ? a : b;
  case KILN_OP_cast: return trunc(a);
  default: return NAN;
  }
}

#endif
