/* context.c - kiln_context: allocator, threads, cache directory, the environment (read
 * once, here), the reference count that keeps it alive for its graphs and executables,
 * the last error, the worker pool and compile progress; status names; the version. */
#include "driver.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

const char *kiln_version(void) { return KILN_VERSION; }

/* ------------------------------------------------------------------ the environment */
static bool env_flag(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

/* A copy of $name into *out (NULL when unset or empty); false when out of memory. */
static bool env_strdup(const kiln_allocator *a, const char *name, char **out) {
  const char *v = getenv(name);
  *out = NULL;
  if (!v || !*v) return true;
  size_t n = strlen(v) + 1;
  if (!(*out = kiln_ir_malloc(a, n))) return false;
  memcpy(*out, v, n);
  return true;
}

/* Every environment variable a library call acts on, read here once (kiln.h, ENVIRONMENT).
 * False when out of memory. */
static bool read_env(kiln_context *ctx) {
  kiln_context_env *e = &ctx->env;
  const char *v = getenv("KILN_VERIFY");
  e->verify = v && v[0] == '1';
  e->corrupt_kernel = -1;
  v = getenv("KILN_VERIFY_CORRUPT_KERNEL");
  if (v && *v) e->corrupt_kernel = (int32_t)strtol(v, NULL, 10);
  e->profile = env_flag("KILN_PROFILE");
  e->verify_passes = env_flag("KILN_VERIFY_PASSES");
  e->pool_spin_us = -1;
  v = getenv("KILN_POOL_SPIN_US");
  if (v && *v) {
    char *end;
    long us = strtol(v, &end, 10);
    if (*end == 0 && us >= 0 && us <= 1000000) e->pool_spin_us = us; /* anything else: the default */
  }
  return env_strdup(&ctx->alloc, "KILN_AOTRT", &e->aotrt) && env_strdup(&ctx->alloc, "CC", &e->cc);
}

/* Compile cache: the option, else $KILN_CACHE_DIR, else $HOME/.cache/kiln (no HOME: no
 * cache). "" from either source disables it: ctx->cache_dir stays NULL. */
static bool set_cache_dir(kiln_context *ctx, const char *option) {
  const char *dir = option ? option : getenv("KILN_CACHE_DIR");
  const char *home = getenv("HOME");
  const char *suffix = "";
  if (!dir && home && home[0]) {
    dir = home;
    suffix = "/.cache/kiln";
  }
  if (!dir || !dir[0]) return true;
  size_t n = strlen(dir), m = strlen(suffix);
  while (n > 1 && dir[n - 1] == '/') n--; /* "dir/" and "dir" name the same entries */
  ctx->cache_dir = kiln_ir_malloc(&ctx->alloc, n + m + 1);
  if (!ctx->cache_dir) return false;
  memcpy(ctx->cache_dir, dir, n);
  memcpy(ctx->cache_dir + n, suffix, m + 1);
  return true;
}

/* ------------------------------------------------------------------ lifetime */
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
  atomic_init(&ctx->refs, 1);
  pthread_mutex_init(&ctx->mu, NULL);
  if (!set_cache_dir(ctx, o ? o->cache_dir : NULL) || !read_env(ctx)) {
    kiln_context_destroy(ctx);
    return KILN_ERR_OUT_OF_MEMORY;
  }
  *out = ctx;
  return KILN_OK;
}

void kiln_driver_ctx_retain(kiln_context *ctx) { atomic_fetch_add(&ctx->refs, 1); }

void kiln_driver_ctx_release(kiln_context *ctx) {
  if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1) return;
  if (ctx->pool) kiln_rt_pool_destroy(ctx->pool);
  kiln_ir_free(&ctx->alloc, ctx->cache_dir);
  kiln_ir_free(&ctx->alloc, ctx->env.aotrt);
  kiln_ir_free(&ctx->alloc, ctx->env.cc);
  pthread_mutex_destroy(&ctx->mu);
  kiln_allocator a = ctx->alloc;
  kiln_ir_free(&a, ctx);
}

/* The user's reference: graphs and executables still alive keep the context until the
 * last of them is destroyed. */
void kiln_context_destroy(kiln_context *ctx) { kiln_driver_ctx_release(ctx); }

kiln_context *kiln_driver_graph_ctx(const kiln_graph *g) {
  /* Every graph the public API makes allocates through &ctx->alloc (graph_api.c, load.c). */
  return (kiln_context *)((char *)g->alloc - offsetof(kiln_context, alloc));
}

/* ------------------------------------------------------------------ errors */
const char *kiln_last_error(const kiln_context *ctx) {
  if (!ctx) return "no context";
  return ctx->last_error[0] ? ctx->last_error : "no error";
}

size_t kiln_last_error_copy(const kiln_context *ctx, char *buf, size_t n) {
  if (!ctx) return (size_t)snprintf(buf, n, "no context");
  pthread_mutex_t *mu = (pthread_mutex_t *)&ctx->mu; /* locking does not change the message */
  pthread_mutex_lock(mu);
  size_t len = (size_t)snprintf(buf, n, "%s", ctx->last_error[0] ? ctx->last_error : "no error");
  pthread_mutex_unlock(mu);
  return len;
}

kiln_status kiln_driver_fail(kiln_context *ctx, const kiln_diag *d) {
  kiln_status st = d->status == KILN_OK ? KILN_ERR_INTERNAL : d->status;
  if (ctx) {
    pthread_mutex_lock(&ctx->mu);
    snprintf(ctx->last_error, sizeof ctx->last_error, "%s", d->msg[0] ? d->msg : kiln_status_name(st));
    pthread_mutex_unlock(&ctx->mu);
  }
  return st;
}

kiln_status kiln_driver_failf(kiln_context *ctx, kiln_status st, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&ctx->mu);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    pthread_mutex_unlock(&ctx->mu);
    va_end(ap);
  }
  return st;
}

/* ------------------------------------------------------------------ pool, progress */
kiln_rt_pool *kiln_driver_pool(kiln_context *ctx) {
  pthread_mutex_lock(&ctx->mu);
  if (!ctx->pool) ctx->pool = kiln_rt_pool_create(&ctx->alloc, ctx->threads, ctx->env.pool_spin_us);
  kiln_rt_pool *p = ctx->pool;
  pthread_mutex_unlock(&ctx->mu);
  return p;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A compile of a second or more says what it is doing (log level 1): quick compiles stay
 * quiet, a slow one (a large model, a cold cache) shows which stage it is in. */
static void print_progress(void *user, const char *msg) {
  kiln_driver_progress *s = user;
  double t = now_s() - s->start_s;
  if (s->ctx->log_level >= 2 || (s->ctx->log_level >= 1 && t >= 1.0)) fprintf(stderr, "kiln: [%.1f s] %s\n", t, msg);
}

kiln_progress kiln_driver_progress_start(kiln_context *ctx, kiln_driver_progress *state) {
  state->ctx = ctx;
  state->start_s = now_s();
  return (kiln_progress){ctx->log_level >= 1 ? print_progress : NULL, state};
}

void kiln_free(kiln_context *ctx, void *p) {
  kiln_ir_free(ctx ? &ctx->alloc : NULL, p);
}
