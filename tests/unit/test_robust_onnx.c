/* test_robust_onnx.c - bad ONNX input gets a clear error, never a crash, an abort or a
 * huge allocation. Models come from tests/unit/data/robust_onnx_models.py: small valid
 * models (base_*) and structured mutations (s_*, each invalid in one way). The structured
 * cases must be refused at load or compile time with a message (the ones marked "any" may
 * also load); the valid ones are mutated byte-wise (bit flips, byte stores, truncation,
 * insertion, deletion, duplication of a chunk) from a fixed seed, and every mutant that
 * loads is verified, compiled and run with random inputs. Run under the ASan build
 * (build-fuzz-asan) to see memory errors.
 *
 * Every context uses an allocator that refuses requests over 256 MiB and counts them:
 * a model that asks for more is answered KILN_ERR_OUT_OF_MEMORY, and the structured cases
 * (huge dims among them) must not ask at all: they are to be refused by size checks.
 *
 * Environment: KILN_FUZZ_ONNX=N byte mutations (default 300), KILN_FUZZ_SEED=S. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../driver/driver.h"
#include "test_gen_models.h"

#define CAP_BYTES ((size_t)256 << 20)

typedef struct cap_alloc {
  int64_t oversize; /* requests over CAP_BYTES (refused) */
  size_t largest;
} cap_alloc;

static void *cap_malloc(void *u, size_t n) {
  cap_alloc *c = u;
  if (n > c->largest) c->largest = n;
  if (n > CAP_BYTES) {
    c->oversize++;
    return NULL;
  }
  return malloc(n);
}
static void *cap_realloc(void *u, void *p, size_t n) {
  cap_alloc *c = u;
  if (n > c->largest) c->largest = n;
  if (n > CAP_BYTES) {
    c->oversize++;
    return NULL;
  }
  return realloc(p, n);
}
static void cap_free(void *u, void *p) {
  (void)u;
  free(p);
}

TestSuite(robust_onnx, .fini = gen_cleanup, .timeout = 300);

static void gen(void) { gen_models("robust", "robust_onnx_models.py", NULL); }

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

typedef enum { STAGE_LOAD, STAGE_COMPILE, STAGE_RUN, STAGE_DONE } stage;
static const char *stage_names[] = {"load", "compile", "run", "done"};

/* Loads path; when it loads, verifies, compiles and runs it (compiled and interpreted)
 * with random inputs. Returns the stage that refused the model (STAGE_DONE: none).
 * Asserts the invariants: a non-empty message with every error, load errors naming the
 * file, loaded graphs that verify. */
static stage try_model(const char *path, const char *label, uint64_t seed, cap_alloc *ca) {
  kiln_allocator a = {cap_malloc, cap_realloc, cap_free, ca};
  kiln_context_options co = {.allocator = &a, .threads = 1, .cache_dir = ""};
  kiln_context *ctx;
  cr_assert_eq(kiln_context_create(&co, &ctx), KILN_OK);
  kiln_graph *g = NULL;
  kiln_executable *exe = NULL;
  stage at = STAGE_LOAD;
  kiln_status st = kiln_load_onnx(ctx, path, NULL, &g);
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  if (st != KILN_OK) {
    const char *msg = kiln_last_error(ctx);
    cr_assert_null(g, "%s: failed load left a graph", label);
    cr_assert(msg[0] && strcmp(msg, "no error"), "%s: load failed (%s) without a message", label,
              kiln_status_name(st));
    cr_assert(strstr(msg, base), "%s: load error does not name the file: %s", label, msg);
    cr_assert(st != KILN_ERR_INTERNAL, "%s: internal error: %s", label, msg);
    goto done;
  }
  cr_assert_not_null(g, "%s: loaded without a graph", label);
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s: loaded graph does not verify: %s", label, d.msg);
  at = STAGE_COMPILE;
  st = kiln_compile(ctx, g, NULL, &exe);
  if (st != KILN_OK) {
    const char *msg = kiln_last_error(ctx);
    cr_assert(msg[0] && strcmp(msg, "no error"), "%s: compile failed (%s) without a message", label,
              kiln_status_name(st));
    cr_assert(st != KILN_ERR_INTERNAL, "%s: internal error at compile: %s", label, msg);
    goto done;
  }
  at = STAGE_RUN;
  int n_in = kiln_executable_num_inputs(exe), n_out = kiln_executable_num_outputs(exe);
  cr_assert(n_in >= 0 && n_in <= 64 && n_out >= 0 && n_out <= 64, "%s: %d inputs, %d outputs", label, n_in, n_out);
  kiln_tensor in[64], out[64], ref[64];
  memset(in, 0, sizeof in);
  memset(out, 0, sizeof out);
  memset(ref, 0, sizeof ref);
  bool too_big = false;
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < (pass ? n_out : n_in); i++) {
      kiln_tensor *t = pass ? &out[i] : &in[i];
      if (pass) kiln_executable_output_info(exe, i, NULL, &t->dtype, &t->rank, t->dims);
      else kiln_executable_input_info(exe, i, NULL, &t->dtype, &t->rank, t->dims);
      int64_t n = 1;
      for (int r = 0; r < t->rank; r++) n = t->dims[r] && n > (INT64_MAX >> 4) / t->dims[r] ? INT64_MAX >> 4 : n * t->dims[r];
      if (n > (1 << 22)) {
        too_big = true; /* a legitimately large model: not worth running here */
        continue;
      }
      size_t nb = (size_t)n * kiln_dtype_size(t->dtype);
      t->data = calloc(nb + 1, 1);
      if (pass) {
        ref[i] = *t;
        ref[i].data = calloc(nb + 1, 1);
      }
      for (int64_t j = 0; !pass && j < n; j++) {
        uint64_t r = rng_next(&seed);
        if (kiln_dtype_is_float(t->dtype)) kiln_rt_set_f64(t->dtype, t->data, j, (double)(r % 9) / 4.0 - 1.0);
        else kiln_rt_set_i64(t->dtype, t->data, j, t->dtype == KILN_BOOL ? (int64_t)(r & 1) : (int64_t)(r % 3));
      }
    }
  }
  if (!too_big) {
    st = kiln_run(exe, in, (size_t)n_in, out, (size_t)n_out);
    if (st != KILN_OK) {
      const char *msg = kiln_last_error(ctx);
      cr_assert(msg[0] && strcmp(msg, "no error"), "%s: run failed without a message", label);
      cr_assert(st != KILN_ERR_INTERNAL, "%s: internal error at run: %s", label, msg);
    } else {
      at = STAGE_DONE;
    }
    st = kiln_interpret(ctx, g, in, (size_t)n_in, ref, (size_t)n_out);
    if (st != KILN_OK) {
      const char *msg = kiln_last_error(ctx);
      cr_assert(msg[0] && strcmp(msg, "no error"), "%s: interpret failed without a message", label);
    }
  } else {
    at = STAGE_DONE;
  }
  for (int i = 0; i < 64; i++) {
    free(in[i].data);
    free(out[i].data);
    free(ref[i].data);
  }
done:
  kiln_executable_destroy(exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return at;
}

Test(robust_onnx, structured_mutations_are_refused_with_a_message) {
  gen();
  char path[512];
  snprintf(path, sizeof path, "%s/manifest.txt", gen_dir);
  FILE *f = fopen(path, "r");
  cr_assert(f, "no manifest");
  char name[128], expect[16];
  int n = 0, failures = 0;
  while (fscanf(f, "%127s %15s", name, expect) == 2) {
    snprintf(path, sizeof path, "%s/%s.onnx", gen_dir, name);
    cap_alloc ca = {0};
    stage at = try_model(path, name, 42, &ca);
    n++;
    bool ok = true;
    if (!strcmp(expect, "ok")) ok = at == STAGE_DONE;
    else if (!strcmp(expect, "err")) ok = at == STAGE_LOAD || at == STAGE_COMPILE;
    if (!ok) {
      failures++;
      cr_log_error("%s: expected %s, stopped at stage %s", name, expect, stage_names[at]);
    }
    if (ca.oversize) {
      failures++;
      cr_log_error("%s: asked the allocator for %zu bytes (refuse huge sizes before allocating)", name,
                   ca.largest);
    }
  }
  fclose(f);
  cr_assert_gt(n, 50, "the manifest lists only %d models", n);
  cr_assert_eq(failures, 0, "%d of %d structured cases misbehaved (see the log)", failures, n);
}

static void mutate(uint8_t *buf, size_t *len, size_t cap, uint64_t *s) {
  int kind = (int)(rng_next(s) % 7);
  size_t n = *len;
  if (!n) return;
  size_t at = (size_t)(rng_next(s) % n);
  switch (kind) {
    case 0: buf[at] ^= (uint8_t)(1u << (rng_next(s) % 8)); break;           /* bit flip */
    case 1: buf[at] = (uint8_t)rng_next(s); break;                            /* byte store */
    case 2: {                                                                 /* interesting byte */
      static const uint8_t v[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x10, 0x12, 0x1a, 0x22};
      buf[at] = v[rng_next(s) % sizeof v];
      break;
    }
    case 3: *len = at; break;                                                 /* truncate */
    case 4: {                                                                 /* insert bytes */
      size_t k = 1 + (size_t)(rng_next(s) % 8);
      if (n + k > cap) break;
      memmove(buf + at + k, buf + at, n - at);
      for (size_t i = 0; i < k; i++) buf[at + i] = (uint8_t)rng_next(s);
      *len = n + k;
      break;
    }
    case 5: {                                                                 /* delete bytes */
      size_t k = 1 + (size_t)(rng_next(s) % 8);
      if (at + k > n) k = n - at;
      memmove(buf + at, buf + at + k, n - at - k);
      *len = n - k;
      break;
    }
    default: {                                                                /* duplicate a chunk */
      size_t from = (size_t)(rng_next(s) % n), k = 1 + (size_t)(rng_next(s) % 16);
      if (from + k > n) k = n - from;
      if (n + k > cap) break;
      memmove(buf + at + k, buf + at, n - at);
      memmove(buf + at, buf + (from >= at ? from + k : from), k);
      *len = n + k;
      break;
    }
  }
}

Test(robust_onnx, byte_mutations_never_crash) {
  gen();
  static const char *const bases[] = {"base_add_relu", "base_gemm_softmax", "base_conv_pool",
                                      "base_shape_ops", "base_gather_slice", "base_typed_data"};
  const int n_bases = (int)(sizeof bases / sizeof bases[0]);
  const char *env = getenv("KILN_FUZZ_ONNX");
  int total = env && atoi(env) > 0 ? atoi(env) : 300;
  const char *senv = getenv("KILN_FUZZ_SEED");
  uint64_t seed0 = senv && *senv ? strtoull(senv, NULL, 10) : 20240611;
  static uint8_t orig[8][16384], buf[32768];
  size_t orig_len[8];
  char path[512], mpath[512];
  for (int b = 0; b < n_bases; b++) {
    snprintf(path, sizeof path, "%s/%s.onnx", gen_dir, bases[b]);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    orig_len[b] = fread(orig[b], 1, sizeof orig[b], f);
    fclose(f);
    cr_assert(orig_len[b] > 0 && orig_len[b] < sizeof orig[b]);
  }
  snprintf(mpath, sizeof mpath, "%s/mutant.onnx", gen_dir);
  int counts[4] = {0};
  for (int i = 0; i < total; i++) {
    uint64_t s = seed0 * 1000003u + (uint64_t)i;
    int b = i % n_bases;
    size_t len = orig_len[b];
    memcpy(buf, orig[b], len);
    int rounds = 1 + (int)(rng_next(&s) % 4);
    for (int r = 0; r < rounds; r++) mutate(buf, &len, sizeof buf, &s);
    FILE *f = fopen(mpath, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
    char label[160];
    snprintf(label, sizeof label, "mutant %d of %s (KILN_FUZZ_SEED=%llu)", i, bases[b], (unsigned long long)seed0);
    cap_alloc ca = {0};
    counts[try_model(mpath, label, s, &ca)]++;
  }
  cr_log_info("%d mutants: %d refused at load, %d at compile, %d at run, %d ran", total, counts[0],
              counts[1], counts[2], counts[3]);
}
