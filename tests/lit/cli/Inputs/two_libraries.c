/* two_libraries.c - a program linking two model libraries from kiln compile (prefixes a and
 * b): each one's PREFIX_describe gives its own model, and each runs. */
#include "a.h"
#include "b.h"

#include <stdio.h>

int main(void) {
  const kiln_aot_model *ma = a_describe(), *mb = b_describe();
  printf("a: %s [%lld,%lld]\n", ma->name, (long long)ma->inputs[0].dims[0], (long long)ma->inputs[0].dims[1]);
  printf("b: %s [%lld,%lld]\n", mb->name, (long long)mb->inputs[0].dims[0], (long long)mb->inputs[0].dims[1]);
  a *x;
  b *y;
  float in_a[2 * 3] = {1, 2, 3, 4, 5, 6}, out_a[2 * 3], in_b[4 * 2] = {1, 1, 1, 1, 2, 2, 2, 2}, out_b[4 * 2];
  if (a_create(&x, NULL) || b_create(&y, NULL)) return 1;
  if (a_run(x, in_a, out_a) || b_run(y, in_b, out_b)) return 1;
  printf("a_run: %g %g; b_run: %g %g\n", out_a[0], out_a[5], out_b[0], out_b[7]);
  a_destroy(x);
  b_destroy(y);
  return 0;
}
