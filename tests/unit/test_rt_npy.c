/* test_rt_npy.c - .npy I/O: write/read round trip for every dtype, files written by numpy
 * (and ours read by numpy) when python3 with numpy is available, v2/v3 headers, and clear
 * errors naming the file for Fortran order, big-endian, unknown dtypes and truncation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../runtime/rt.h"

static char dir[64];

static void make_dir(void) {
  strcpy(dir, "/tmp/kiln_npy_XXXXXX");
  cr_assert(mkdtemp(dir));
}
static void remove_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(npy, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name) {
  static char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return p;
}

static const kiln_dtype npy_types[] = {KILN_F32, KILN_F64, KILN_F16, KILN_I8, KILN_I16,
                                       KILN_I32, KILN_I64, KILN_U8, KILN_BOOL};

Test(npy, round_trip_every_dtype) {
  kiln_shape shapes[3] = {kiln_shape_make(2, (int64_t[]){2, 3}), kiln_shape_make(0, NULL),
                          kiln_shape_make(3, (int64_t[]){1, 0, 4})};
  for (size_t t = 0; t < sizeof npy_types / sizeof *npy_types; t++)
    for (int s = 0; s < 3; s++) {
      kiln_rt_tensor w = {npy_types[t], shapes[s], NULL};
      size_t nb = kiln_rt_tensor_nbytes(&w);
      w.data = malloc(nb + 1);
      for (int64_t i = 0; i < kiln_shape_numel(&w.shape); i++) kiln_rt_set_i64(w.dtype, w.data, i, (i * 7) % 5 - 1);
      kiln_diag d = {0};
      cr_assert_eq(kiln_rt_npy_write(path_of("rt.npy"), &w, &d), KILN_OK, "%s", d.msg);
      kiln_rt_tensor r;
      cr_assert_eq(kiln_rt_npy_read(NULL, path_of("rt.npy"), &r, &d), KILN_OK, "%s", d.msg);
      cr_assert_eq(r.dtype, w.dtype, "%s", kiln_dtype_name(w.dtype));
      cr_assert(kiln_shape_eq(&r.shape, &w.shape), "%s shape %d", kiln_dtype_name(w.dtype), s);
      cr_assert(nb == 0 || memcmp(r.data, w.data, nb) == 0, "%s data", kiln_dtype_name(w.dtype));
      kiln_ir_free(NULL, r.data);
      free(w.data);
      /* the data starts 64-byte aligned, as numpy writes it */
      FILE *f = fopen(path_of("rt.npy"), "rb");
      unsigned char pre[10];
      cr_assert_eq(fread(pre, 1, 10, f), 10);
      fclose(f);
      cr_assert_eq((10 + (pre[8] | pre[9] << 8)) % 64, 0);
    }
}

Test(npy, bf16_cannot_be_written) {
  uint16_t v = 0;
  kiln_rt_tensor t = {KILN_BF16, kiln_shape_make(1, (int64_t[]){1}), &v};
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_npy_write(path_of("bf.npy"), &t, &d), KILN_ERR_UNSUPPORTED);
  cr_assert(strstr(d.msg, "bf.npy"), "%s", d.msg);
}

/* Writes a file with a hand-made header (version major.0) and `data_bytes` bytes of data. */
static void write_raw(const char *name, int major, const char *dict, size_t data_bytes) {
  FILE *f = fopen(path_of(name), "wb");
  size_t hl = strlen(dict) + 1;
  fwrite("\x93NUMPY", 1, 6, f);
  fputc(major, f);
  fputc(0, f);
  if (major == 1) {
    fputc((int)(hl & 0xff), f);
    fputc((int)(hl >> 8), f);
  } else {
    for (int i = 0; i < 4; i++) fputc((int)((hl >> (8 * i)) & 0xff), f);
  }
  fwrite(dict, 1, hl - 1, f);
  fputc('\n', f);
  for (size_t i = 0; i < data_bytes; i++) fputc((int)(i + 1), f);
  fclose(f);
}

Test(npy, reads_v2_and_v3_headers) {
  for (int major = 2; major <= 3; major++) {
    write_raw("v.npy", major, "{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", 6);
    kiln_rt_tensor r;
    kiln_diag d = {0};
    cr_assert_eq(kiln_rt_npy_read(NULL, path_of("v.npy"), &r, &d), KILN_OK, "v%d: %s", major, d.msg);
    cr_assert_eq(r.dtype, KILN_I16);
    cr_assert_eq(r.shape.rank, 1);
    cr_assert_eq(r.shape.dims[0], 3);
    cr_assert_eq(((int16_t *)r.data)[0], 0x0201);
    kiln_ir_free(NULL, r.data);
  }
}

static void expect_error(const char *name, kiln_status want, const char *words) {
  kiln_rt_tensor r;
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of(name), &r, &d), want, "%s: %s", name, d.msg);
  cr_assert(strstr(d.msg, name), "the error names the file: %s", d.msg);
  cr_assert(strstr(d.msg, words), "the error says '%s': %s", words, d.msg);
  cr_assert_null(r.data);
}

Test(npy, clear_errors) {
  write_raw("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
  expect_error("fortran.npy", KILN_ERR_UNSUPPORTED, "Fortran");
  write_raw("big.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8);
  expect_error("big.npy", KILN_ERR_UNSUPPORTED, "big-endian");
  write_raw("c16.npy", 1, "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 32);
  expect_error("c16.npy", KILN_ERR_UNSUPPORTED, "<c16");
  write_raw("short.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 20);
  expect_error("short.npy", KILN_ERR_PARSE, "truncated");
  FILE *f = fopen(path_of("junk.npy"), "wb");
  fputs("hello, world", f);
  fclose(f);
  expect_error("junk.npy", KILN_ERR_PARSE, "magic");
  expect_error("missing.npy", KILN_ERR_IO, "cannot open");
}

static bool have_numpy(void) { return system("python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

Test(npy, reads_files_written_by_numpy_and_numpy_reads_ours) {
  if (!have_numpy()) {
    printf("skipping: python3 with numpy is not available\n");
    cr_skip_test("python3 with numpy is not available");
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import numpy as np; d='%s'; "
           "np.save(d+'/f4.npy', np.arange(6, dtype='<f4').reshape(2,3) - 2.5); "
           "np.save(d+'/f2.npy', np.array([1.5, -0.25], dtype='<f2')); "
           "np.save(d+'/i8.npy', np.array([[-(2**40)], [7]], dtype='<i8')); "
           "np.save(d+'/b1.npy', np.array([True, False, True])); "
           "np.save(d+'/u1.npy', np.array(200, dtype='u1')); "
           "np.save(d+'/i1.npy', np.array([-3, 4], dtype='i1'))\"",
           dir);
  cr_assert_eq(system(cmd), 0, "numpy could not write its files");
  kiln_rt_tensor r;
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("f4.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_F32 && r.shape.rank == 2 && r.shape.dims[0] == 2 && r.shape.dims[1] == 3);
  for (int i = 0; i < 6; i++) cr_assert_eq(((float *)r.data)[i], i - 2.5f);
  kiln_ir_free(NULL, r.data);
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("f2.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_F16 && kiln_rt_get_f64(KILN_F16, r.data, 1) == -0.25);
  kiln_ir_free(NULL, r.data);
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("i8.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_I64 && ((int64_t *)r.data)[0] == -((int64_t)1 << 40) && ((int64_t *)r.data)[1] == 7);
  kiln_ir_free(NULL, r.data);
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("b1.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_BOOL && r.shape.dims[0] == 3 && ((uint8_t *)r.data)[2] == 1 && ((uint8_t *)r.data)[1] == 0);
  kiln_ir_free(NULL, r.data);
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("u1.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_U8 && r.shape.rank == 0 && ((uint8_t *)r.data)[0] == 200);
  kiln_ir_free(NULL, r.data);
  cr_assert_eq(kiln_rt_npy_read(NULL, path_of("i1.npy"), &r, &d), KILN_OK, "%s", d.msg);
  cr_assert(r.dtype == KILN_I8 && ((int8_t *)r.data)[0] == -3);
  kiln_ir_free(NULL, r.data);

  /* and numpy reads what we write */
  int32_t v[6] = {1, -2, 3, -4, 5, -6};
  kiln_rt_tensor w = {KILN_I32, kiln_shape_make(2, (int64_t[]){3, 2}), v};
  cr_assert_eq(kiln_rt_npy_write(path_of("ours.npy"), &w, &d), KILN_OK, "%s", d.msg);
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import numpy as np, sys; a=np.load('%s/ours.npy'); "
           "sys.exit(0 if a.dtype==np.int32 and a.shape==(3,2) and a[2,1]==-6 and a[0,1]==-2 else 1)\"",
           dir);
  cr_assert_eq(system(cmd), 0, "numpy did not read our file back");
}
