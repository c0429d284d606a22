/* context.c - kiln_context: allocator, threads, cache directory, last error; status names. */
#include "driver.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
    "KILN_OK",           "KILN_ERR_INVALID_ARGUMENT", "KILN_ERR_IO",
    "KILN_ERR_PARSE",    "KILN_ERR_UNSUPPORTED",      "KILN_ERR_SHAPE",
    "KILN_ERR_OUT_OF_MEMORY", "KILN_ERR_BACKEND",     "KILN_ERR_NO_DEVICE",
    "KILN_ERR_INTERNAL",
};
_Static_assert(sizeof status_names / sizeof status_names[0] == KILN_ERR_INTERNAL + 1,
               "a name for every kiln_status");

const char *kiln_status_name(kiln_status s) {
  return (unsigned)s <= KILN_ERR_INTERNAL ? status_names[s] : "KILN_ERR_?";
}

kiln_status kiln_context_create(const kiln_context_options *o, kiln_context **out) {
  if (!out) return KILN_ERR_INVALID_ARGUMENT;
  *out = NULL;
  const kiln_allocator *a = o && o->allocator ? o->allocator : kiln_ir_default_allocator();
  kiln_context *ctx = kiln_ir_malloc(a, sizeof *ctx);
  if (!ctx) return KILN_ERR_OUT_OF_MEMORY;
  memset(ctx, 0, sizeof *ctx);
  ctx->alloc = *a;
  ctx->threads = o ? o->threads : 0;
  ctx->log_level = o ? o->log_level : 0;
  /* Compile cache: the option, else $KILN_CACHE_DIR, else $HOME/.cache/kiln (no HOME: no
   * cache). "" from either source disables it: ctx->cache_dir stays NULL. */
  const char *dir = o && o->cache_dir ? o->cache_dir : getenv("KILN_CACHE_DIR");
  const char *home = getenv("HOME");
  const char *suffix = "";
  if (!dir && home && home[0]) {
    dir = home;
    suffix = "/.cache/kiln";
  }
  if (dir && dir[0]) {
    size_t n = strlen(dir), m = strlen(suffix);
    while (n > 1 && dir[n - 1] == '/') n--; /* "dir/" and "dir" name the same entries */
    ctx->cache_dir = kiln_ir_malloc(&ctx->alloc, n + m + 1);
    if (!ctx->cache_dir) {
      kiln_ir_free(a, ctx);
      return KILN_ERR_OUT_OF_MEMORY;
    }
    memcpy(ctx->cache_dir, dir, n);
    memcpy(ctx->cache_dir + n, suffix, m + 1);
  }
  *out = ctx;
  return KILN_OK;
}

void kiln_context_destroy(kiln_context *ctx) {
  if (!ctx) return;
  if (ctx->pool) kiln_rt_pool_destroy(ctx->pool);
  kiln_ir_free(&ctx->alloc, ctx->cache_dir);
  kiln_allocator a = ctx->alloc;
  kiln_ir_free(&a, ctx);
}

const char *kiln_last_error(const kiln_context *ctx) {
  if (!ctx) return "no context";
  return ctx->last_error[0] ? ctx->last_error : "no error";
}

kiln_status kiln_driver_fail(kiln_context *ctx, const kiln_diag *d) {
  kiln_status st = d->status == KILN_OK ? KILN_ERR_INTERNAL : d->status;
  if (ctx) snprintf(ctx->last_error, sizeof ctx->last_error, "%s", d->msg[0] ? d->msg : kiln_status_name(st));
  return st;
}

kiln_status kiln_driver_failf(kiln_context *ctx, kiln_status st, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
  }
  return st;
}

kiln_rt_pool *kiln_driver_pool(kiln_context *ctx) {
  if (!ctx->pool) ctx->pool = kiln_rt_pool_create(&ctx->alloc, ctx->threads);
  return ctx->pool;
}

void kiln_free(kiln_context *ctx, void *p) {
  kiln_ir_free(ctx ? &ctx->alloc : NULL, p);
}
