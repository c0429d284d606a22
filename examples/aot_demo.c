/* aot_demo.c - a user's program calling a model compiled ahead of time by
 * `kiln compile cnn.onnx -o libcnn.so --header cnn.h --name cnn`. It includes only the
 * generated header and links only the generated library:
 *
 *   cc -O2 -I. aot_demo.c -L. -lcnn -Wl,-rpath,. -o aot_demo
 *   ./aot_demo input.f32 output.f32 [runs]
 *
 * It reads the input as raw float32, runs the model, prints the top outputs and the time
 * per run, and writes the output as raw float32 (so a script can compare it with the JIT).
 */
#include "cnn.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define IN_ELEMS (1 * 3 * 32 * 32)
#define OUT_ELEMS 10

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s input.f32 output.f32 [runs]\n", argv[0]);
    return 2;
  }
  int runs = argc > 3 ? atoi(argv[3]) : 50;
  static float input[IN_ELEMS], output[OUT_ELEMS];
  FILE *f = fopen(argv[1], "rb");
  if (!f || fread(input, sizeof(float), IN_ELEMS, f) != IN_ELEMS) {
    fprintf(stderr, "%s: cannot read %d floats\n", argv[1], IN_ELEMS);
    return 1;
  }
  fclose(f);

  cnn *m;
  int rc = cnn_create(&m, NULL);
  if (rc) {
    fprintf(stderr, "cnn_create: %s\n", cnn_strerror(rc));
    return 1;
  }
  if ((rc = cnn_run(m, input, output))) { /* warm-up, and the result we print */
    fprintf(stderr, "cnn_run: %s\n", cnn_strerror(rc));
    return 1;
  }
  double t0 = now_ms();
  for (int r = 0; r < runs; r++) cnn_run(m, input, output);
  double per_run = (now_ms() - t0) / runs;

  int order[OUT_ELEMS];
  for (int i = 0; i < OUT_ELEMS; i++) order[i] = i;
  for (int i = 0; i < OUT_ELEMS; i++) /* selection sort: 10 elements */
    for (int j = i + 1; j < OUT_ELEMS; j++)
      if (output[order[j]] > output[order[i]]) {
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
  const kiln_aot_model *info = cnn_describe();
  printf("AOT library: model '%s', %d kernels, arena %lld bytes\n", info->name, info->n_kernels,
         (long long)info->arena_bytes);
  printf("top outputs:");
  for (int i = 0; i < 3; i++) printf("  class %d = %.5f", order[i], output[order[i]]);
  printf("\ntime per run: %.3f ms (mean of %d runs)\n", per_run, runs);

  f = fopen(argv[2], "wb");
  if (!f || fwrite(output, sizeof(float), OUT_ELEMS, f) != OUT_ELEMS) {
    fprintf(stderr, "%s: cannot write\n", argv[2]);
    return 1;
  }
  fclose(f);
  cnn_destroy(m);
  return 0;
}
