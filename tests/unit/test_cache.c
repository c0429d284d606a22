/* test_cache.c - the CPU compile cache (driver/cache.c, cpu_create in
 * driver/executable.c): a second compile of the same graph is a hit with the same
 * results; a different graph or option misses; new weights hit and give the new results
 * (JIT code reads constants through bufs); a damaged entry falls back to compiling and is
 * replaced; "" disables the cache; an unusable directory never fails a compile; the
 * default directory is $HOME/.cache/kiln. Also SHA-256 against the FIPS 180-2 vectors.
 * Each Criterion test runs in its own process, so setenv here stays local. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../driver/driver.h"

/* ------------------------------------------------------------------ helpers */
static char *make_tmpdir(void) {
  char *t = strdup("/tmp/kiln_cache_test_XXXXXX");
  cr_assert(t && mkdtemp(t), "mkdtemp");
  return t;
}

/* Removes dir and the plain files directly in it (what the cache writes). */
static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      struct stat st;
      if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
      else unlink(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

/* Number of entries (*.o) in dir; the first one's path into first when given. */
static int count_entries(const char *dir, char *first, size_t n) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int c = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l > 2 && !strcmp(e->d_name + l - 2, ".o") && e->d_name[0] != '.') {
      if (c == 0 && first) snprintf(first, n, "%s/%s", dir, e->d_name);
      c++;
    }
  }
  closedir(d);
  return c;
}

static kiln_context *make_ctx(const char *cache_dir) {
  kiln_context_options o = {0};
  o.cache_dir = cache_dir;
  o.threads = 1;
  kiln_context *ctx = NULL;
  cr_assert_eq(kiln_context_create(&o, &ctx), KILN_OK);
  return ctx;
}

enum { M = 4, K = 8, N = 8 };

/* y = act(relu(x @ W + b) * scale), act tanh (0) or sigmoid (1): a GEMM kernel (its
 * descriptor is embedded in the code) and a fused elementwise kernel. w_shift changes
 * only the weights W. */
static kiln_graph *build_act(kiln_context *ctx, float scale, float w_shift, int act) {
  kiln_graph *g = NULL;
  cr_assert_eq(kiln_graph_create(ctx, "cache_test", &g), KILN_OK);
  float W[K * N], b[N];
  for (int i = 0; i < K * N; i++) W[i] = (float)((i * 7) % 11 - 5) * 0.125f + w_shift;
  for (int i = 0; i < N; i++) b[i] = (float)(i % 3) * 0.25f - 0.25f;
  int64_t xd[2] = {M, K}, wd[2] = {K, N}, bd[1] = {N};
  kiln_value x = kiln_input(g, "x", KILN_F32, 2, xd);
  kiln_value w = kiln_constant(g, "W", KILN_F32, 2, wd, W);
  kiln_value bv = kiln_constant(g, "b", KILN_F32, 1, bd, b);
  kiln_value h = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w), bv));
  kiln_value hs = kiln_mul(g, h, kiln_scalar(g, KILN_F32, scale));
  kiln_value y = act ? kiln_sigmoid(g, hs) : kiln_tanh(g, hs);
  cr_assert_eq(kiln_output(g, "y", y), KILN_OK);
  cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
  return g;
}
static kiln_graph *build(kiln_context *ctx, float scale, float w_shift) { return build_act(ctx, scale, w_shift, 0); }

/* Compiles g (fusion given), runs it on a fixed input, checks the result against the
 * reference interpreter, copies it to y and returns stats.cache_hit. */
static int compile_run(kiln_context *ctx, kiln_graph *g, kiln_fusion_level fusion, float y[M * N]) {
  kiln_compile_options co = {0};
  co.fusion = fusion;
  kiln_executable *exe = NULL;
  cr_assert_eq(kiln_compile(ctx, g, &co, &exe), KILN_OK, "compile: %s", kiln_last_error(ctx));
  float xin[M * K], ref[M * N];
  for (int i = 0; i < M * K; i++) xin[i] = (float)((i * 5) % 9 - 4) * 0.25f;
  kiln_tensor in = {KILN_F32, 2, {M, K}, xin};
  kiln_tensor out = {KILN_F32, 2, {M, N}, y}, rout = {KILN_F32, 2, {M, N}, ref};
  cr_assert_eq(kiln_run(exe, &in, 1, &out, 1), KILN_OK, "run: %s", kiln_last_error(ctx));
  cr_assert_eq(kiln_interpret(ctx, g, &in, 1, &rout, 1), KILN_OK, "interpret: %s", kiln_last_error(ctx));
  for (int i = 0; i < M * N; i++) cr_assert(fabsf(y[i] - ref[i]) < 1e-5f, "y[%d] = %g, reference %g", i, y[i], ref[i]);
  kiln_exe_stats s;
  cr_assert_eq(kiln_executable_stats(exe, &s), KILN_OK);
  kiln_executable_destroy(exe);
  return s.cache_hit;
}

/* ------------------------------------------------------------------ SHA-256 */
Test(cache, sha256_known_vectors) {
  char hex[65];
  kiln_sha256_hex("", 0, hex);
  cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  kiln_sha256_hex("abc", 3, hex);
  cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: two pad blocks */
  kiln_sha256_hex(two, strlen(two), hex);
  cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  /* One million 'a', fed in uneven pieces to exercise the buffering. */
  kiln_sha256 s;
  kiln_sha256_init(&s);
  char chunk[997];
  memset(chunk, 'a', sizeof chunk);
  size_t left = 1000000;
  while (left) {
    size_t n = left < sizeof chunk ? left : sizeof chunk;
    kiln_sha256_update(&s, chunk, n);
    left -= n;
  }
  uint8_t dg[32];
  kiln_sha256_final(&s, dg);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", dg[i]);
  cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ------------------------------------------------------------------ hits and misses */
Test(cache, second_compile_hits_with_same_results) {
  char *dir = make_tmpdir();
  kiln_context *ctx = make_ctx(dir);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y1[M * N], y2[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y1), 0, "a cold cache cannot hit");
  cr_assert_eq(count_entries(dir, NULL, 0), 1, "one entry stored");
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 1, "the second compile must hit");
  cr_assert_eq(memcmp(y1, y2, sizeof y1), 0, "hit and miss give identical outputs");
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  /* A new context (as in a new process) finds the same entry. */
  ctx = make_ctx(dir);
  g = build(ctx, 0.5f, 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 1);
  cr_assert_eq(memcmp(y1, y2, sizeof y1), 0);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, different_graph_or_option_misses) {
  char *dir = make_tmpdir();
  kiln_context *ctx = make_ctx(dir);
  float y1[M * N], y2[M * N];
  kiln_graph *g = build(ctx, 0.5f, 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y1), 0);
  /* Another op: other code, another key. */
  kiln_graph *g2 = build_act(ctx, 0.5f, 0, 1);
  cr_assert_eq(compile_run(ctx, g2, KILN_FUSION_FULL, y2), 0, "a different graph must miss");
  cr_assert_neq(memcmp(y1, y2, sizeof y1), 0, "and compute its own result");
  /* Another fusion level: other kernels, another key. */
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_NONE, y2), 0, "a different option must miss");
  cr_assert_eq(count_entries(dir, NULL, 0), 3);
  /* Each is a hit the second time. */
  cr_assert_eq(compile_run(ctx, g2, KILN_FUSION_FULL, y2), 1);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_NONE, y2), 1);
  kiln_graph_destroy(g);
  kiln_graph_destroy(g2);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, new_weights_reuse_code_with_new_values) {
  char *dir = make_tmpdir();
  kiln_context *ctx = make_ctx(dir);
  float y1[M * N], y2[M * N];
  kiln_graph *g = build(ctx, 0.5f, 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y1), 0);
  /* Only the weight tensor differs: the JIT reads it through bufs, so the code is the
   * same (a hit), and compile_run checks the outputs against the interpreter on the new
   * weights: a stale embedded constant would fail there. */
  kiln_graph *g2 = build(ctx, 0.5f, 0.375f);
  cr_assert_eq(compile_run(ctx, g2, KILN_FUSION_FULL, y2), 1, "weights are not part of the code");
  cr_assert_neq(memcmp(y1, y2, sizeof y1), 0, "the new weights are used");
  /* Another scalar: whether it is embedded (a miss) or a constant buffer (a hit) is the
   * passes' choice; either way the result must be the new one (checked inside). */
  kiln_graph *g3 = build(ctx, 0.75f, 0);
  compile_run(ctx, g3, KILN_FUSION_FULL, y2);
  cr_assert_neq(memcmp(y1, y2, sizeof y1), 0, "the new scalar is used");
  kiln_graph_destroy(g3);
  kiln_graph_destroy(g);
  kiln_graph_destroy(g2);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

/* ------------------------------------------------------------------ robustness */
static void damage_and_recompile(long keep_bytes, bool flip) {
  char *dir = make_tmpdir();
  kiln_context *ctx = make_ctx(dir);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y1[M * N], y2[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y1), 0);
  char entry[4096];
  cr_assert_eq(count_entries(dir, entry, sizeof entry), 1);
  struct stat st;
  cr_assert_eq(stat(entry, &st), 0);
  if (flip) {
    /* Same length, one byte of the object changed. */
    FILE *f = fopen(entry, "r+b");
    cr_assert(f);
    cr_assert_eq(fseek(f, st.st_size / 2, SEEK_SET), 0);
    int c = fgetc(f);
    cr_assert_eq(fseek(f, st.st_size / 2, SEEK_SET), 0);
    fputc(c ^ 0x5a, f);
    fclose(f);
  } else {
    cr_assert_eq(truncate(entry, keep_bytes < 0 ? st.st_size / 2 : keep_bytes), 0);
  }
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 0, "a damaged entry is a miss");
  cr_assert_eq(memcmp(y1, y2, sizeof y1), 0);
  struct stat st2;
  cr_assert_eq(stat(entry, &st2), 0);
  cr_assert_eq(st2.st_size, st.st_size, "the entry is rewritten");
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 1, "and hits again");
  cr_assert_eq(memcmp(y1, y2, sizeof y1), 0);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, truncated_entry_falls_back) { damage_and_recompile(-1, false); }
Test(cache, empty_entry_falls_back) { damage_and_recompile(0, false); }
Test(cache, header_only_entry_falls_back) { damage_and_recompile(48, false); }
Test(cache, corrupted_entry_falls_back) { damage_and_recompile(0, true); }

/* An entry whose checksum is right but whose payload is no object (a bug or a
 * deliberate write): LLVM refuses it, and the compile goes on without the cache. */
Test(cache, unloadable_entry_falls_back) {
  char *dir = make_tmpdir();
  kiln_context *ctx = make_ctx(dir);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y1[M * N], y2[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y1), 0);
  char entry[4096];
  cr_assert_eq(count_entries(dir, entry, sizeof entry), 1);
  static const char junk[] = "\x7f" "ELF this is not an object file, but its checksum is right";
  uint8_t hdr[48];
  memcpy(hdr, "KILNOBJ1", 8);
  for (int i = 0; i < 8; i++) hdr[8 + i] = (uint8_t)((sizeof junk) >> (8 * i));
  kiln_sha256 s;
  kiln_sha256_init(&s);
  kiln_sha256_update(&s, junk, sizeof junk);
  kiln_sha256_final(&s, hdr + 16);
  FILE *f = fopen(entry, "wb");
  cr_assert(f);
  fwrite(hdr, 1, sizeof hdr, f);
  fwrite(junk, 1, sizeof junk, f);
  fclose(f);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 0, "an unloadable entry is a miss");
  cr_assert_eq(memcmp(y1, y2, sizeof y1), 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y2), 1, "the entry was replaced");
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, empty_dir_disables) {
  char *dir = make_tmpdir();
  /* Even with $KILN_CACHE_DIR set, the explicit "" wins. */
  setenv("KILN_CACHE_DIR", dir, 1);
  kiln_context *ctx = make_ctx("");
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0, "no cache: never a hit");
  cr_assert_eq(count_entries(dir, NULL, 0), 0, "nothing written");
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  /* KILN_CACHE_DIR="" disables it too. */
  setenv("KILN_CACHE_DIR", "", 1);
  ctx = make_ctx(NULL);
  g = build(ctx, 0.5f, 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, unusable_dir_does_not_fail) {
  char *dir = make_tmpdir();
  /* A directory below a regular file can be neither created nor written, even by root
   * (for whom a read-only mode would not stop writes). */
  char file[2048], bad[4096];
  snprintf(file, sizeof file, "%s/file", dir);
  snprintf(bad, sizeof bad, "%s/sub/cache", file);
  FILE *f = fopen(file, "w");
  cr_assert(f);
  fclose(f);
  kiln_context *ctx = make_ctx(bad);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, missing_dir_is_created) {
  char *dir = make_tmpdir();
  char sub[4096];
  snprintf(sub, sizeof sub, "%s/a/b/", dir); /* trailing slash on purpose */
  kiln_context *ctx = make_ctx(sub);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  snprintf(sub, sizeof sub, "%s/a/b", dir);
  cr_assert_eq(count_entries(sub, NULL, 0), 1);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 1);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  rm_tree(dir);
  free(dir);
}

Test(cache, default_dir_is_under_home) {
  char *home = make_tmpdir();
  setenv("HOME", home, 1);
  unsetenv("KILN_CACHE_DIR");
  kiln_context *ctx = make_ctx(NULL);
  char want[4096];
  snprintf(want, sizeof want, "%s/.cache/kiln", home);
  cr_assert_str_eq(ctx->cache_dir, want);
  kiln_graph *g = build(ctx, 0.5f, 0);
  float y[M * N];
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 0);
  cr_assert_eq(count_entries(want, NULL, 0), 1);
  cr_assert_eq(compile_run(ctx, g, KILN_FUSION_FULL, y), 1);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  /* No HOME and no KILN_CACHE_DIR: no cache. */
  unsetenv("HOME");
  ctx = make_ctx(NULL);
  cr_assert_null(ctx->cache_dir);
  kiln_context_destroy(ctx);
  rm_tree(home);
  free(home);
}
