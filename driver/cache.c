/* cache.c - the on-disk compile cache: SHA-256 keys, and content-addressed entries
 * <dir>/<64 hex digits>.o holding a JIT object behind a small header that a reader checks
 * (magic, length, SHA-256 of the payload), so a truncated or damaged file reads as a miss
 * instead of reaching LLVM's object loader. Writes go to a temporary file in the same
 * directory and are renamed into place, so concurrent compiles never see half a file.
 * Nothing here can make a compile fail: every problem is "no entry" (logged at
 * log_level >= 1).
 */
#include "driver.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ SHA-256 (FIPS 180-4) */
static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(kiln_sha256 *s, const uint8_t *blk) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 |
           (uint32_t)blk[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6],
           h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
  s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

void kiln_sha256_init(kiln_sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->len = 0;
  s->used = 0;
}

void kiln_sha256_update(kiln_sha256 *s, const void *data, size_t n) {
  const uint8_t *p = data;
  s->len += n;
  while (n > 0) {
    if (s->used == 0 && n >= 64) {
      sha_block(s, p);
      p += 64, n -= 64;
      continue;
    }
    size_t take = 64 - s->used < n ? 64 - s->used : n;
    memcpy(s->buf + s->used, p, take);
    s->used += take, p += take, n -= take;
    if (s->used == 64) {
      sha_block(s, s->buf);
      s->used = 0;
    }
  }
}

void kiln_sha256_final(kiln_sha256 *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8;
  uint8_t pad[72] = {0x80};
  size_t padn = (s->used < 56 ? 56 : 120) - s->used;
  for (int i = 0; i < 8; i++) pad[padn + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
  kiln_sha256_update(s, pad, padn + 8);
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void kiln_sha256_hex(const void *data, size_t n, char hex[65]) {
  kiln_sha256 s;
  uint8_t dg[32];
  kiln_sha256_init(&s);
  kiln_sha256_update(&s, data, n);
  kiln_sha256_final(&s, dg);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", dg[i]);
}

/* ------------------------------------------------------------------ entries */
/* Bump when the entry layout or the key's composition changes. */
#define CACHE_MAGIC "KILNOBJ1"
enum { CACHE_HDR = 8 + 8 + 32 };

static void cache_log(const kiln_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cache_log(const kiln_context *ctx, const char *fmt, ...) {
  if (ctx->log_level < 1) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("kiln: cache: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

bool kiln_driver_cache_enabled(const kiln_context *ctx) { return ctx && ctx->cache_dir && ctx->cache_dir[0]; }

static bool entry_path(const kiln_context *ctx, const char key[65], char *path, size_t n) {
  int w = snprintf(path, n, "%s/%s.o", ctx->cache_dir, key);
  return w > 0 && (size_t)w < n;
}

/* mkdir -p: the default ~/.cache/kiln usually does not exist yet. */
static bool make_dirs(const char *dir) {
  char tmp[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof tmp) return false;
  memcpy(tmp, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (tmp[i] != '/' && tmp[i] != '\0') continue;
    char c = tmp[i];
    tmp[i] = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return false;
    tmp[i] = c;
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

void kiln_driver_cache_key(const void *material, size_t n, char key[65]) {
  /* The Kiln version and the entry format join codegen's fingerprint: a new Kiln may
   * change the runtime ABI the object calls into without changing the module text. */
  kiln_sha256 s;
  uint8_t dg[32];
  kiln_sha256_init(&s);
  static const char prefix[] = "kiln " KILN_VERSION " " CACHE_MAGIC "\n";
  kiln_sha256_update(&s, prefix, sizeof prefix - 1);
  kiln_sha256_update(&s, material, n);
  kiln_sha256_final(&s, dg);
  for (int i = 0; i < 32; i++) snprintf(key + 2 * i, 3, "%02x", dg[i]);
}

bool kiln_driver_cache_get(kiln_context *ctx, const char key[65], void **data, size_t *n) {
  *data = NULL;
  *n = 0;
  char path[4096];
  if (!kiln_driver_cache_enabled(ctx) || !entry_path(ctx, key, path, sizeof path)) return false;
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno != ENOENT) cache_log(ctx, "%s: cannot open: %s", path, strerror(errno));
    return false;
  }
  uint8_t hdr[CACHE_HDR];
  uint8_t *buf = NULL;
  bool ok = fread(hdr, 1, sizeof hdr, f) == sizeof hdr && memcmp(hdr, CACHE_MAGIC, 8) == 0;
  uint64_t len = 0;
  for (int i = 0; ok && i < 8; i++) len |= (uint64_t)hdr[8 + i] << (8 * i);
  if (ok) {
    /* The length must match the file exactly: no trailing bytes, no truncation. */
    long here = ftell(f);
    ok = here >= 0 && fseek(f, 0, SEEK_END) == 0 && ftell(f) == here + (long)len && fseek(f, here, SEEK_SET) == 0;
  }
  if (ok && !(buf = kiln_ir_malloc(&ctx->alloc, len ? (size_t)len : 1))) ok = false;
  if (ok) ok = fread(buf, 1, (size_t)len, f) == (size_t)len;
  fclose(f);
  if (ok) {
    kiln_sha256 s;
    uint8_t dg[32];
    kiln_sha256_init(&s);
    kiln_sha256_update(&s, buf, (size_t)len);
    kiln_sha256_final(&s, dg);
    ok = memcmp(dg, hdr + 16, 32) == 0;
  }
  if (!ok) {
    cache_log(ctx, "%s: damaged entry, ignored (it will be replaced)", path);
    kiln_ir_free(&ctx->alloc, buf);
    return false;
  }
  *data = buf;
  *n = (size_t)len;
  return true;
}

void kiln_driver_cache_put(kiln_context *ctx, const char key[65], const void *data, size_t n) {
  char path[4096], tmp[4096];
  if (!kiln_driver_cache_enabled(ctx) || !entry_path(ctx, key, path, sizeof path)) return;
  if (!make_dirs(ctx->cache_dir)) {
    cache_log(ctx, "%s: not a usable directory (%s); not caching", ctx->cache_dir, strerror(errno));
    return;
  }
  int w = snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", ctx->cache_dir, key);
  if (w <= 0 || (size_t)w >= sizeof tmp) return;
  int fd = mkstemp(tmp);
  if (fd < 0) {
    cache_log(ctx, "%s: cannot create a file (%s); not caching", ctx->cache_dir, strerror(errno));
    return;
  }
  uint8_t hdr[CACHE_HDR];
  memcpy(hdr, CACHE_MAGIC, 8);
  for (int i = 0; i < 8; i++) hdr[8 + i] = (uint8_t)((uint64_t)n >> (8 * i));
  kiln_sha256 s;
  kiln_sha256_init(&s);
  kiln_sha256_update(&s, data, n);
  kiln_sha256_final(&s, hdr + 16);
  FILE *f = fdopen(fd, "wb");
  bool ok = f && fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr && fwrite(data, 1, n, f) == n;
  if (f) ok = fclose(f) == 0 && ok;
  else close(fd);
  /* mkstemp makes the file private; an entry is as shareable as its directory. */
  if (ok) ok = chmod(tmp, 0644) == 0;
  if (ok) ok = rename(tmp, path) == 0;
  if (!ok) {
    cache_log(ctx, "%s: cannot write (%s); not caching", path, strerror(errno));
    unlink(tmp);
    return;
  }
  cache_log(ctx, "stored %s (%zu bytes)", path, n);
}
