/* tensor.c - dense tensors: byte size and slow per-element access through double and
 * int64 for every dtype (the interpreter and the tests use these; compiled code never does).
 *
 * Conversions on store follow the graph's cast rules: float -> integer truncates toward
 * zero, integers wrap to the dtype's width, anything -> bool is x != 0, and f16/bf16 round
 * to nearest even through the ir/ converters. */
#include "rt.h"

#include <math.h>
#include <string.h>

size_t kiln_rt_tensor_nbytes(const kiln_rt_tensor *t) {
  return (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
}

double kiln_rt_get_f64(kiln_dtype dt, const void *data, int64_t i) {
  switch (dt) {
  case KILN_F32: return ((const float *)data)[i];
  case KILN_F64: return ((const double *)data)[i];
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)data)[i]);
  case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)data)[i]);
  case KILN_I8: return ((const int8_t *)data)[i];
  case KILN_I16: return ((const int16_t *)data)[i];
  case KILN_I32: return ((const int32_t *)data)[i];
  case KILN_I64: return (double)((const int64_t *)data)[i];
  case KILN_U8: return ((const uint8_t *)data)[i];
  case KILN_BOOL: return ((const uint8_t *)data)[i] != 0;
  default: KILN_ASSERT(!"unknown dtype");
  }
}

/* double -> int64 truncating toward zero. Out-of-range values (UB for a plain C cast)
 * saturate to the int64 range and NaN gives 0: the interpreter must never trap. */
static int64_t trunc_to_i64(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775807.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}

int64_t kiln_rt_get_i64(kiln_dtype dt, const void *data, int64_t i) {
  switch (dt) {
  case KILN_F32: case KILN_F64: case KILN_F16: case KILN_BF16:
    return trunc_to_i64(kiln_rt_get_f64(dt, data, i));
  case KILN_I8: return ((const int8_t *)data)[i];
  case KILN_I16: return ((const int16_t *)data)[i];
  case KILN_I32: return ((const int32_t *)data)[i];
  case KILN_I64: return ((const int64_t *)data)[i];
  case KILN_U8: return ((const uint8_t *)data)[i];
  case KILN_BOOL: return ((const uint8_t *)data)[i] != 0;
  default: KILN_ASSERT(!"unknown dtype");
  }
}

void kiln_rt_set_i64(kiln_dtype dt, void *data, int64_t i, int64_t v) {
  /* Narrowing conversions wrap modulo 2^width (GCC/Clang define this for signed targets). */
  switch (dt) {
  case KILN_F32: ((float *)data)[i] = (float)v; break; /* one rounding, not via double */
  case KILN_F64: ((double *)data)[i] = (double)v; break;
  case KILN_F16: ((uint16_t *)data)[i] = kiln_f32_to_f16((float)v); break;
  case KILN_BF16: ((uint16_t *)data)[i] = kiln_f32_to_bf16((float)v); break;
  case KILN_I8: ((int8_t *)data)[i] = (int8_t)v; break;
  case KILN_I16: ((int16_t *)data)[i] = (int16_t)v; break;
  case KILN_I32: ((int32_t *)data)[i] = (int32_t)v; break;
  case KILN_I64: ((int64_t *)data)[i] = v; break;
  case KILN_U8: ((uint8_t *)data)[i] = (uint8_t)v; break;
  case KILN_BOOL: ((uint8_t *)data)[i] = v != 0; break;
  default: KILN_ASSERT(!"unknown dtype");
  }
}

/* double -> integer dtype dt as ops.def's cast: truncate toward zero, saturate to dt's
 * range, NaN -> 0. */
static int64_t saturate_to(kiln_dtype dt, double v) {
  int64_t lo, hi;
  switch (dt) {
  case KILN_I8: lo = INT8_MIN, hi = INT8_MAX; break;
  case KILN_I16: lo = INT16_MIN, hi = INT16_MAX; break;
  case KILN_I32: lo = INT32_MIN, hi = INT32_MAX; break;
  case KILN_U8: lo = 0, hi = UINT8_MAX; break;
  default: return trunc_to_i64(v);
  }
  if (v != v) return 0;
  return v <= (double)lo ? lo : v >= (double)hi ? hi : (int64_t)v;
}

void kiln_rt_set_f64(kiln_dtype dt, void *data, int64_t i, double v) {
  switch (dt) {
  case KILN_F32: ((float *)data)[i] = (float)v; break;
  case KILN_F64: ((double *)data)[i] = v; break;
  /* f64 -> f16 goes through f32 (the converters are f32-based): a double rounding that
   * can differ from a direct conversion only in the last f16 bit of rare halfway cases. */
  case KILN_F16: ((uint16_t *)data)[i] = kiln_f32_to_f16((float)v); break;
  case KILN_BF16: ((uint16_t *)data)[i] = kiln_f32_to_bf16((float)v); break;
  case KILN_BOOL: ((uint8_t *)data)[i] = v != 0; break; /* NaN != 0: true */
  default: kiln_rt_set_i64(dt, data, i, saturate_to(dt, v)); break;
  }
}
