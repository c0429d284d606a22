/* onnx_tensor.c - decoding ONNX TensorProtos (initializers, Constant values, .pb test data):
 * dtype mapping, raw and typed data fields, and external data files, which must stay inside
 * the model's folder. */
#include "onnx_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ONNX TensorProto.DataType numbers (the system onnx.proto may predate the newest ones). */
enum {
  T_FLOAT = 1, T_UINT8 = 2, T_INT8 = 3, T_UINT16 = 4, T_INT16 = 5, T_INT32 = 6, T_INT64 = 7,
  T_STRING = 8, T_BOOL = 9, T_FLOAT16 = 10, T_DOUBLE = 11, T_UINT32 = 12, T_UINT64 = 13,
  T_COMPLEX64 = 14, T_COMPLEX128 = 15, T_BFLOAT16 = 16, T_FLOAT8E4M3FN = 17,
  T_FLOAT8E4M3FNUZ = 18, T_FLOAT8E5M2 = 19, T_FLOAT8E5M2FNUZ = 20, T_UINT4 = 21, T_INT4 = 22,
  T_FLOAT4E2M1 = 23,
};

bool fe_dtype(int32_t t, kiln_dtype *out) {
  switch (t) {
    case T_FLOAT: *out = KILN_F32; return true;
    case T_DOUBLE: *out = KILN_F64; return true;
    case T_FLOAT16: *out = KILN_F16; return true;
    case T_BFLOAT16: *out = KILN_BF16; return true;
    case T_INT8: *out = KILN_I8; return true;
    case T_INT16: *out = KILN_I16; return true;
    case T_INT32: *out = KILN_I32; return true;
    case T_INT64: *out = KILN_I64; return true;
    case T_UINT8: *out = KILN_U8; return true;
    case T_BOOL: *out = KILN_BOOL; return true;
    default: return false;
  }
}

const char *fe_onnx_type_name(int32_t t) {
  static const char *const names[] = {
      "undefined", "float", "uint8", "int8", "uint16", "int16", "int32", "int64",
      "string", "bool", "float16", "double", "uint32", "uint64", "complex64",
      "complex128", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2",
      "float8e5m2fnuz", "uint4", "int4", "float4e2m1"};
  if (t >= 0 && t < (int32_t)(sizeof names / sizeof names[0])) return names[t];
  return "unknown";
}

/* Reads the external data of t (nbytes at its offset) into buf. The location must be a
 * relative path that stays inside model_dir, also after resolving symlinks. */
static kiln_status read_external(const kiln_allocator *a, const Onnx__TensorProto *t,
                                 const char *model_dir, const char *file, const char *what,
                                 void **out, size_t nbytes, kiln_diag *d) {
  void *buf = NULL;
  const char *loc = NULL;
  int64_t offset = 0, length = -1;
  for (size_t i = 0; i < t->n_external_data; i++) {
    const Onnx__StringStringEntryProto *e = t->external_data[i];
    if (!e->key || !e->value) continue;
    char *end = NULL;
    if (!strcmp(e->key, "location")) {
      loc = e->value;
    } else if (!strcmp(e->key, "offset") || !strcmp(e->key, "length")) {
      errno = 0;
      long long v = strtoll(e->value, &end, 10);
      if (errno || end == e->value || *end || v < 0)
        return kiln_diag_set(d, KILN_ERR_PARSE, "%s: %s: bad external data %s '%s'", file, what,
                             e->key, e->value);
      if (!strcmp(e->key, "offset")) offset = v;
      else length = v;
    }
  }
  if (!loc || !*loc)
    return kiln_diag_set(d, KILN_ERR_PARSE, "%s: %s: external data without a location", file, what);
  if (!model_dir)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED,
                         "%s: %s: external data '%s' needs the model's folder (load from a file)",
                         file, what, loc);
  /* Lexical checks first, so the error says why rather than just "not found". */
  bool escapes = loc[0] == '/' || strchr(loc, '\\') != NULL;
  for (const char *p = loc; !escapes && *p;) {
    const char *q = strchr(p, '/');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') escapes = true;
    p = q ? q + 1 : p + len;
  }
  if (escapes)
    return kiln_diag_set(d, KILN_ERR_PARSE,
                         "%s: %s: external data path '%s' leaves the model's folder (absolute "
                         "paths and '..' are refused)", file, what, loc);
  char joined[PATH_MAX], base[PATH_MAX], real[PATH_MAX];
  if (snprintf(joined, sizeof joined, "%s/%s", model_dir, loc) >= (int)sizeof joined)
    return kiln_diag_set(d, KILN_ERR_IO, "%s: %s: external data path '%s' too long", file, what, loc);
  if (!realpath(model_dir, base))
    return kiln_diag_set(d, KILN_ERR_IO, "%s: %s: cannot resolve model folder '%s': %s", file, what,
                         model_dir, strerror(errno));
  if (!realpath(joined, real))
    return kiln_diag_set(d, KILN_ERR_IO, "%s: %s: cannot open external data '%s': %s", file, what,
                         joined, strerror(errno));
  size_t bl = strlen(base);
  bool inside = !strncmp(real, base, bl) && (real[bl] == '/' || (bl == 1 && base[0] == '/'));
  if (!inside)
    return kiln_diag_set(d, KILN_ERR_PARSE,
                         "%s: %s: external data path '%s' resolves to '%s', outside the model's "
                         "folder '%s'", file, what, loc, real, base);
  if (length >= 0 && (uint64_t)length != nbytes)
    return kiln_diag_set(d, KILN_ERR_PARSE,
                         "%s: %s: external data '%s' has length %lld, the tensor needs %zu bytes",
                         file, what, loc, (long long)length, nbytes);
  int fd = open(real, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_diag_set(d, KILN_ERR_IO, "%s: %s: cannot open external data '%s': %s", file, what,
                         joined, strerror(errno));
  struct stat stt;
  kiln_status st = KILN_OK;
  if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
    st = kiln_diag_set(d, KILN_ERR_IO, "%s: %s: external data '%s' is not a regular file", file,
                       what, joined);
  } else if ((uint64_t)offset > (uint64_t)stt.st_size ||
             nbytes > (uint64_t)stt.st_size - (uint64_t)offset) {
    st = kiln_diag_set(d, KILN_ERR_PARSE,
                       "%s: %s: external data '%s' is %lld bytes, too short for %zu bytes at "
                       "offset %lld", file, what, joined, (long long)stt.st_size, nbytes,
                       (long long)offset);
  } else if (!(buf = kiln_ir_malloc(a, nbytes ? nbytes : 1))) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory (%zu bytes)", file, what,
                       nbytes);
  } else {
    size_t done = 0;
    while (done < nbytes) {
      ssize_t r = pread(fd, (char *)buf + done, nbytes - done, (off_t)(offset + (int64_t)done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        st = kiln_diag_set(d, KILN_ERR_IO, "%s: %s: reading external data '%s' failed: %s", file,
                           what, joined, r < 0 ? strerror(errno) : "unexpected end of file");
        break;
      }
      done += (size_t)r;
    }
  }
  close(fd);
  if (st != KILN_OK) kiln_ir_free(a, buf);
  else *out = buf;
  return st;
}

/* Copies a typed repeated field into buf, narrowing to dt. */
static size_t typed_count(const Onnx__TensorProto *t, kiln_dtype dt) {
  switch (dt) {
    case KILN_F32: return t->n_float_data;
    case KILN_F64: return t->n_double_data;
    case KILN_I64: return t->n_int64_data;
    default: return t->n_int32_data; /* i32 i16 i8 u8 bool, f16/bf16 bits */
  }
}

/* Copies a typed repeated field (of numel values, checked by the caller) into buf. */
static void copy_typed(const Onnx__TensorProto *t, kiln_dtype dt, int64_t numel, void *buf) {
  for (int64_t i = 0; i < numel; i++) {
    switch (dt) {
      case KILN_F32: ((float *)buf)[i] = t->float_data[i]; break;
      case KILN_F64: ((double *)buf)[i] = t->double_data[i]; break;
      case KILN_I64: ((int64_t *)buf)[i] = t->int64_data[i]; break;
      case KILN_I32: ((int32_t *)buf)[i] = t->int32_data[i]; break;
      case KILN_I16: ((int16_t *)buf)[i] = (int16_t)t->int32_data[i]; break;
      case KILN_I8: ((int8_t *)buf)[i] = (int8_t)t->int32_data[i]; break;
      case KILN_U8: ((uint8_t *)buf)[i] = (uint8_t)t->int32_data[i]; break;
      case KILN_BOOL: ((uint8_t *)buf)[i] = t->int32_data[i] != 0; break;
      case KILN_F16:
      case KILN_BF16: ((uint16_t *)buf)[i] = (uint16_t)t->int32_data[i]; break;
      default: KILN_ASSERT(0);
    }
  }
}

kiln_status fe_decode_tensor(const kiln_allocator *a, const Onnx__TensorProto *t,
                             const char *model_dir, const char *file, const char *what,
                             kiln_dtype *dt, kiln_shape *shape, void **data, kiln_diag *d) {
  *data = NULL;
  int32_t ot = t->has_data_type ? t->data_type : 0;
  if (!fe_dtype(ot, dt))
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: %s: unsupported dtype %s (%d)", file, what,
                         fe_onnx_type_name(ot), ot);
  if (t->n_dims > KILN_MAX_RANK)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: %s: rank %zu exceeds Kiln's maximum of %d",
                         file, what, t->n_dims, KILN_MAX_RANK);
  if (t->segment)
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "%s: %s: segmented tensors are not supported", file,
                         what);
  shape->rank = (int32_t)t->n_dims;
  int64_t numel = 1;
  for (size_t i = 0; i < t->n_dims; i++) {
    if (t->dims[i] < 0 || (t->dims[i] > 0 && numel > INT64_MAX / 8 / t->dims[i]))
      return kiln_diag_set(d, KILN_ERR_PARSE, "%s: %s: bad dim %lld", file, what,
                           (long long)t->dims[i]);
    shape->dims[i] = t->dims[i];
    numel *= t->dims[i];
  }
  size_t nbytes = (size_t)numel * kiln_dtype_size(*dt);
  void *buf = NULL;
  bool external = t->has_data_location &&
                  t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  /* Sizes are checked against the data present before allocating: dims alone may ask for
   * any amount of memory. */
  if (external) {
    kiln_status st = read_external(a, t, model_dir, file, what, &buf, nbytes, d);
    if (st != KILN_OK) return st;
  } else {
    size_t have = t->has_raw_data ? t->raw_data.len : typed_count(t, *dt);
    size_t want = t->has_raw_data ? nbytes : (size_t)numel;
    if (have != want)
      return kiln_diag_set(d, KILN_ERR_PARSE, "%s: %s: has %zu %s of data, expected %zu", file, what,
                           have, t->has_raw_data ? "bytes" : "values", want);
    if (!(buf = kiln_ir_malloc(a, nbytes ? nbytes : 1)))
      return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory (%zu bytes)", file,
                           what, nbytes);
    if (t->has_raw_data && nbytes)
      memcpy(buf, t->raw_data.data, nbytes); /* ONNX raw data is little-endian, like the host */
    else if (!t->has_raw_data)
      copy_typed(t, *dt, numel, buf);
  }
  if (*dt == KILN_BOOL)
    for (size_t i = 0; i < nbytes; i++) ((uint8_t *)buf)[i] = ((uint8_t *)buf)[i] != 0;
  *data = buf;
  return KILN_OK;
}

kiln_status fe_tensor_node(fe_ctx *c, const Onnx__TensorProto *t, const char *what,
                           const char *name, int32_t *out) {
  kiln_dtype dt;
  kiln_shape s;
  void *data;
  kiln_status st = fe_decode_tensor(c->g->alloc, t, c->model_dir, c->file, what, &dt, &s, &data, c->d);
  if (st != KILN_OK) return st;
  *out = kiln_ir_constant(c->g, name, dt, &s, data);
  kiln_ir_free(c->g->alloc, data);
  if (*out < 0)
    return kiln_diag_set(c->d, c->g->diag.status ? c->g->diag.status : KILN_ERR_INTERNAL, "%s: %s",
                         c->file, c->g->diag.msg);
  return KILN_OK;
}

kiln_status fe_read_file(const kiln_allocator *a, const char *path, uint8_t **bytes, size_t *size,
                         kiln_diag *d) {
  *bytes = NULL;
  *size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_diag_set(d, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat stt;
  if (fstat(fileno(f), &stt) != 0 || !S_ISREG(stt.st_mode)) {
    fclose(f);
    return kiln_diag_set(d, KILN_ERR_IO, "%s: not a regular file", path);
  }
  size_t n = (size_t)stt.st_size;
  uint8_t *buf = kiln_ir_malloc(a, n ? n : 1);
  if (!buf) {
    fclose(f);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", path, n);
  }
  size_t got = fread(buf, 1, n, f);
  fclose(f);
  if (got != n) {
    kiln_ir_free(a, buf);
    return kiln_diag_set(d, KILN_ERR_IO, "%s: short read", path);
  }
  *bytes = buf;
  *size = n;
  return KILN_OK;
}

void fe_dir_of(const char *path, char *dir, size_t cap) {
  snprintf(dir, cap, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, cap, ".");
  else slash[slash == dir ? 1 : 0] = 0; /* "/t.pb" keeps its folder "/" */
}

/* protobuf-c allocations through Kiln's allocator hook. */
static void *pb_alloc(void *u, size_t n) { return kiln_ir_malloc(u, n); }
static void pb_free(void *u, void *p) { kiln_ir_free(u, p); }

kiln_status kiln_fe_load_tensor_pb(const kiln_allocator *a, const char *path, kiln_const *out,
                                   kiln_diag *d) {
  if (!a) a = kiln_ir_default_allocator();
  memset(out, 0, sizeof *out);
  uint8_t *bytes;
  size_t n;
  kiln_status rst = fe_read_file(a, path, &bytes, &n, d);
  if (rst != KILN_OK) return rst;
  ProtobufCAllocator pa = {pb_alloc, pb_free, (void *)a};
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(&pa, n, bytes);
  kiln_ir_free(a, bytes);
  if (!t) return kiln_diag_set(d, KILN_ERR_PARSE, "%s: not a valid ONNX TensorProto", path);
  char dir[PATH_MAX];
  fe_dir_of(path, dir, sizeof dir);
  void *data = NULL;
  kiln_status st = fe_decode_tensor(a, t, dir, path, "tensor", &out->dtype,
                                    &out->shape, &data, d);
  if (st == KILN_OK) {
    /* The name lives after the data, in the same block: freeing data frees both. */
    const char *nm = t->name ? t->name : "";
    size_t nbytes = (size_t)kiln_shape_numel(&out->shape) * kiln_dtype_size(out->dtype);
    void *block = kiln_ir_realloc(a, data, nbytes + strlen(nm) + 1);
    if (!block) {
      kiln_ir_free(a, data);
      st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    } else {
      memcpy((char *)block + nbytes, nm, strlen(nm) + 1);
      out->data = block;
      out->nbytes = nbytes;
      out->name = (const char *)block + nbytes;
    }
  }
  onnx__tensor_proto__free_unpacked(t, &pa);
  return st;
}
