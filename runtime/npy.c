/* npy.c - .npy file I/O for the CLI and the tests: reads format versions 1.0, 2.0 and
 * 3.0, writes 1.0. Little-endian, C order, dtypes <f4 <f8 <f2 |i1 <i2 <i4 <i8 |u1 |b1.
 * Anything else (Fortran order, big-endian, other dtypes, a truncated file) is an error
 * naming the file. bf16 has no .npy dtype and cannot be written. */
#include "rt.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
  const char *descr;
  kiln_dtype dt;
} npy_dtypes[] = {
    {"<f4", KILN_F32}, {"<f8", KILN_F64}, {"<f2", KILN_F16}, {"|i1", KILN_I8},
    {"<i2", KILN_I16}, {"<i4", KILN_I32}, {"<i8", KILN_I64}, {"|u1", KILN_U8},
    {"|b1", KILN_BOOL},
};
#define N_NPY_DTYPES (sizeof npy_dtypes / sizeof npy_dtypes[0])

/* Finds the value following 'key': in the header dict; NULL if absent. */
static const char *dict_value(const char *h, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "'%s'", key);
  const char *p = strstr(h, pat);
  if (!p) {
    snprintf(pat, sizeof pat, "\"%s\"", key);
    p = strstr(h, pat);
  }
  if (!p) return NULL;
  p += strlen(pat);
  while (isspace((unsigned char)*p)) p++;
  if (*p != ':') return NULL;
  p++;
  while (isspace((unsigned char)*p)) p++;
  return p;
}

static kiln_status parse_header(const char *path, const char *h, kiln_dtype *dt, kiln_shape *s,
                                kiln_diag *d) {
  const char *v = dict_value(h, "descr");
  if (!v || (*v != '\'' && *v != '"'))
    return kiln_diag_set(d, KILN_ERR_PARSE, "%s: .npy header has no 'descr'", path);
  char q = *v++, descr[32];
  size_t n = 0;
  while (*v && *v != q && n + 1 < sizeof descr) descr[n++] = *v++;
  descr[n] = 0;
  /* Single-byte types may be spelled with any byte-order mark. */
  if (n == 3 && (descr[0] == '<' || descr[0] == '=' || descr[0] == '>') &&
      (strcmp(descr + 1, "i1") == 0 || strcmp(descr + 1, "u1") == 0 || strcmp(descr + 1, "b1") == 0))
    descr[0] = '|';
  if (n == 3 && descr[0] == '>')
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: big-endian data ('%s') is not supported", path, descr);
  if (n == 3 && descr[0] == '=') descr[0] = '<'; /* native order: Kiln runs little-endian */
  bool found = false;
  for (size_t i = 0; i < N_NPY_DTYPES; i++)
    if (strcmp(descr, npy_dtypes[i].descr) == 0) {
      *dt = npy_dtypes[i].dt;
      found = true;
    }
  if (!found)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED,
                         "%s: dtype '%s' is not supported (f4 f8 f2 i1 i2 i4 i8 u1 b1)", path, descr);

  v = dict_value(h, "fortran_order");
  if (!v) return kiln_diag_set(d, KILN_ERR_PARSE, "%s: .npy header has no 'fortran_order'", path);
  if (strncmp(v, "True", 4) == 0)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: Fortran-order arrays are not supported (save in C order)", path);
  if (strncmp(v, "False", 5) != 0)
    return kiln_diag_set(d, KILN_ERR_PARSE, "%s: bad 'fortran_order' in .npy header", path);

  v = dict_value(h, "shape");
  if (!v || *v != '(') return kiln_diag_set(d, KILN_ERR_PARSE, "%s: .npy header has no 'shape' tuple", path);
  v++;
  memset(s, 0, sizeof *s);
  for (;;) {
    while (isspace((unsigned char)*v) || *v == ',') v++;
    if (*v == ')') break;
    if (!isdigit((unsigned char)*v)) return kiln_diag_set(d, KILN_ERR_PARSE, "%s: bad 'shape' in .npy header", path);
    if (s->rank == KILN_MAX_RANK)
      return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: rank above %d is not supported", path, KILN_MAX_RANK);
    char *end;
    errno = 0;
    long long dim = strtoll(v, &end, 10);
    if (errno) return kiln_diag_set(d, KILN_ERR_PARSE, "%s: dim out of range in .npy header", path);
    v = end;
    while (*v == 'L') v++; /* Python 2 longs */
    s->dims[s->rank++] = dim;
  }
  return KILN_OK;
}

static uint32_t le_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

kiln_status kiln_rt_npy_read(const kiln_allocator *a, const char *path, kiln_rt_tensor *t, kiln_diag *d) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_diag_set(d, KILN_ERR_IO, "%s: cannot open for reading", path);
  kiln_status st = KILN_OK;
  char *hdr = NULL;
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: not a .npy file (bad magic)", path);
    goto done;
  }
  int major = pre[6];
  uint32_t hlen;
  if (major == 1) {
    if (fread(pre + 8, 1, 2, f) != 2) goto truncated;
    hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
  } else if (major == 2 || major == 3) { /* 3.0 only allows utf-8 in the header */
    if (fread(pre + 8, 1, 4, f) != 4) goto truncated;
    hlen = le_u32(pre + 8);
  } else {
    st = kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported", path, major, pre[7]);
    goto done;
  }
  if (hlen > (1u << 24)) {
    st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: implausible .npy header length %u", path, hlen);
    goto done;
  }
  hdr = kiln_ir_malloc(a, hlen + 1);
  if (!hdr) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    goto done;
  }
  if (fread(hdr, 1, hlen, f) != hlen) goto truncated;
  hdr[hlen] = 0;
  if ((st = parse_header(path, hdr, &t->dtype, &t->shape, d))) goto done;
  /* The shape must fit the bytes the file holds before anything is allocated for it: a
   * header may claim any size (or one whose byte count overflows). */
  long here = ftell(f);
  struct stat sb;
  uint64_t have = here >= 0 && fstat(fileno(f), &sb) == 0 && sb.st_size >= here ? (uint64_t)(sb.st_size - here) : 0;
  uint64_t want = kiln_dtype_size(t->dtype);
  bool fits = true;
  for (int i = 0; i < t->shape.rank; i++)
    if (t->shape.dims[i] == 0) want = 0;
  for (int i = 0; i < t->shape.rank && want; i++)
    if (__builtin_mul_overflow(want, (uint64_t)t->shape.dims[i], &want)) fits = false;
  if (!fits || want > have) {
    char dims[256] = "";
    for (int i = 0; i < t->shape.rank; i++)
      snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "," : "", (long long)t->shape.dims[i]);
    char need[64] = "more than 2^64";
    if (fits) snprintf(need, sizeof need, "%llu", (unsigned long long)want);
    st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: truncated .npy data: shape (%s) needs %s bytes, the file has %llu",
                       path, dims, need, (unsigned long long)have);
    goto done;
  }
  size_t nbytes = kiln_rt_tensor_nbytes(t);
  t->data = kiln_ir_malloc(a, nbytes);
  if (!t->data) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu bytes of data", path, nbytes);
    goto done;
  }
  size_t got = fread(t->data, 1, nbytes, f);
  if (got != nbytes) {
    st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: truncated .npy data (%zu of %zu bytes)", path, got, nbytes);
    goto done;
  }
  if (t->dtype == KILN_BOOL) /* Kiln's bools are exactly 0 or 1 */
    for (size_t i = 0; i < nbytes; i++) ((uint8_t *)t->data)[i] = ((uint8_t *)t->data)[i] != 0;
  goto done;
truncated:
  st = kiln_diag_set(d, KILN_ERR_PARSE, "%s: truncated .npy header", path);
done:
  fclose(f);
  kiln_ir_free(a, hdr);
  if (st != KILN_OK) {
    kiln_ir_free(a, t->data);
    t->data = NULL;
  }
  return st;
}

kiln_status kiln_rt_npy_write(const char *path, const kiln_rt_tensor *t, kiln_diag *d) {
  const char *descr = NULL;
  for (size_t i = 0; i < N_NPY_DTYPES; i++)
    if (npy_dtypes[i].dt == t->dtype) descr = npy_dtypes[i].descr;
  if (!descr)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: dtype %s cannot be stored in a .npy file", path,
                         kiln_dtype_name(t->dtype));
  char h[512];
  int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < t->shape.rank; i++)
    n += snprintf(h + n, sizeof h - (size_t)n, "%lld,%s", (long long)t->shape.dims[i],
                  i + 1 < t->shape.rank ? " " : "");
  if (t->shape.rank > 1) n--; /* numpy writes (2, 3) but (2,) */
  n += snprintf(h + n, sizeof h - (size_t)n, "), }");
  /* Pad with spaces and a final newline so that the data starts 64-byte aligned. */
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  memset(h + n, ' ', (size_t)pad);
  n += pad;
  h[n++] = '\n';
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
  FILE *f = fopen(path, "wb");
  if (!f) return kiln_diag_set(d, KILN_ERR_IO, "%s: cannot open for writing", path);
  size_t nbytes = kiln_rt_tensor_nbytes(t);
  bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, (size_t)n, f) == (size_t)n &&
            (nbytes == 0 || fwrite(t->data, 1, nbytes, f) == nbytes);
  if (fclose(f) != 0) ok = false;
  if (!ok) return kiln_diag_set(d, KILN_ERR_IO, "%s: write failed", path);
  return KILN_OK;
}
